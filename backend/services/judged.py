"""From a model's annotations to a stored result of a judged leaderboard: AlpacaEval's metrics as the
scores, the length control's fit and note as the results, and the judgement's provenance.

One path for a run's annotations (the worker, the scheduler) and for imported ones (`leaderboard judge
import`): a number in the table is always computed here from an annotations file, never copied.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from backend.errors import AnnotationsInvalid, InvalidInput
from backend.judged.annotations import read_annotations
from backend.judged.config import METRICS, JudgedConfig, judged_config_hash
from backend.judged.difficulty import DEFAULT_ROUNDS, JointFit, fit_joint
from backend.judged.score import judged_scores
from backend.services.leaderboard import LeaderboardService
from backend.storage.evaluations import Evaluation

#: Each metric's standard error, under the metric's name (as a benchmark's stderrs are).
STDERR_OF = {"win_rate": "standard_error", "length_controlled_winrate": "lc_standard_error"}


def judged_evaluation(
    config: JudgedConfig,
    request_id: int,
    annotations_file: Path,
    glm_table_file: Path | None,
    provenance: dict[str, Any],
    *,
    artifacts: str,
    attempt: int,
    worker_id: str,
    started_at: datetime,
    finished_at: datetime,
    results: dict[str, Any] | None = None,
) -> Evaluation:
    """The result of ``request_id`` on ``config``; ``provenance`` is the run's (or the import's): what was
    generated and judged how. The length control that was fitted is added to it, so the table can say it.
    ``results``: the file's judged_scores when the caller has them already (the import scores first)."""
    if results is None:
        results = judged_scores(annotations_file, glm_table_file)
    judged = dict(provenance.get("judged") or {})
    judged["length_controlled_glm"] = results["length_controlled_glm"]
    judged["length_controlled_note"] = results["length_controlled_note"]
    if results["length_controlled_glm"] != config.scoring.length_controlled:
        judged["deviation"] = (
            f"the config asks for {config.scoring.length_controlled}, but {results['length_controlled_glm']} "
            "was fitted (no GLM table in the data mirror)"
        )
    return Evaluation(
        request_id=request_id,
        leaderboard=config.name,
        config_hash=judged_config_hash(config),
        scores={name: results[name] for name in METRICS},
        stderrs={name: results[se] for name, se in STDERR_OF.items()},
        results=results,
        provenance={**provenance, "leaderboard": config.name, "judged": judged},
        artifacts=artifacts,
        attempt=attempt,
        worker_id=worker_id,
        started_at=started_at,
        finished_at=finished_at,
        duration_seconds=(finished_at - started_at).total_seconds(),
    )


def joint_difficulty(
    board: LeaderboardService[JudgedConfig], rounds: int = DEFAULT_ROUNDS, seed: int = 0
) -> JointFit:
    """The joint instruction-difficulty fit over every model of a judged leaderboard (its latest result
    each), from their annotations files; the models must have been judged on the same instructions, in the
    same order (InvalidInput names the first that was not)."""
    table = board.table()
    preferences: dict[str, list[float | None]] = {}
    instructions: list[str] | None = None
    for evaluation, request in table.latest.values():
        path = evaluation.provenance.get("annotations_file")
        if not isinstance(path, str):
            continue
        try:
            records = read_annotations(Path(path), f"{request.model}'s annotations").records
        except AnnotationsInvalid as exc:
            raise InvalidInput(f"{request.model}: {exc.message}") from exc
        texts = [r.instruction for r in records]
        if instructions is None:
            instructions = texts
        elif texts != instructions:
            raise InvalidInput(
                f"{request.model} was judged on other instructions (or in another order) than the first "
                f"model of {board.config.name}: a joint fit needs one instruction set"
            )
        preferences[request.model] = [r.preference for r in records]
    if not preferences:
        raise InvalidInput(f"{board.config.name} has no judged model yet")
    return fit_joint(preferences, rounds=rounds, seed=seed)
