"""A judged leaderboard's table: AlpacaEval's columns first (the model's name, then the metrics the config
publishes, by AlpacaEval's names and in its order), then what we add: the model's identity and Hub facts, as
the benchmark table shows them, and the judgement's provenance (annotator, judge, reference, GLM)."""

from __future__ import annotations

from typing import Any

from backend.domain import EvalRequest
from backend.judged.config import JudgedConfig
from backend.judged.run import generator_name
from backend.storage.evaluations import Evaluation

#: The model's name, as AlpacaEval's leaderboard CSV names its rows (its generator name).
NAME = "name"
#: What every row carries after AlpacaEval's columns; the filters and pages read them as in the benchmark table.
MODEL_COLUMNS: tuple[str, ...] = (
    "eval_name", "Model", "fullname", "Model sha", "Precision", "Type", "T", "Weight type", "Architecture",
    "#Params (B)", "Chat Template", "Flagged", "Merged", "Official Providers", "Available on the hub",
    "Hub License", "Hub ❤️", "Submission Date", "Base Model",
)  # fmt: skip
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "Annotator", "Judge", "Reference", "Length-controlled GLM", "Leaderboard", "Config hash", "Request id",
    "Limit", "Evaluated at", "Result version",
)  # fmt: skip
#: Each metric's standard error (the rank ranges read it); the others have none.
STDERRS = {"win_rate": "standard_error", "length_controlled_winrate": "lc_standard_error"}
INT_COLUMNS = frozenset({"n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"})
STRING_COLUMNS = frozenset({NAME, "Annotator", "Judge", "Reference", "Length-controlled GLM"})


def judged_columns(config: JudgedConfig) -> list[str]:
    return [NAME, *config.columns, *MODEL_COLUMNS, *PROVENANCE_COLUMNS]


def judged_row(
    base: dict[str, Any], evaluation: Evaluation, request: EvalRequest, config: JudgedConfig
) -> dict[str, Any]:
    """A judged table row from the benchmark table's model columns (``base``, built by table.build_row)."""
    provenance = evaluation.provenance
    judged = provenance.get("judged") or {}
    generator = judged.get("generator")
    row: dict[str, Any] = {NAME: generator if isinstance(generator, str) else generator_name(request.model)}
    for column in config.columns:
        value = evaluation.scores.get(column)
        if not isinstance(value, int | float) or isinstance(value, bool):
            row[column] = None
        else:
            row[column] = int(value) if column in INT_COLUMNS else float(value)
    row.update({name: base.get(name) for name in MODEL_COLUMNS})
    row.update(
        {
            "Annotator": judged.get("annotator"),
            "Judge": judged.get("judge"),
            "Reference": judged.get("reference"),
            "Length-controlled GLM": judged.get("length_controlled_glm"),
            "Leaderboard": evaluation.leaderboard,
            "Config hash": evaluation.config_hash,
            "Request id": request.id,
            "Limit": provenance.get("limit"),
            "Evaluated at": base.get("Evaluated at"),
            "Result version": evaluation.version,
        }
    )
    return row
