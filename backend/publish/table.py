"""The leaderboard table: the reference's 36 columns, in its order and with its names, then our own.

Derived from what we store, honestly: values we cannot know are left empty (null) rather than invented.
- Hub ❤️, "Available on the hub" and Hub License are the Hub metadata the scheduler last refreshed
  (storage/model_metadata); before a model's first refresh: 0 likes, available, and the license its
  submission was validated with.
- Upload To Hub Date is null: we do not record when the commit was pushed to the Hub.
- Generation is 0 for a model without a declared base model and 1 for one with; Base Model is the declared
  base model, or the model itself (the reference's convention for generation 0).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from backend.domain import EvalRequest, ModelType
from backend.judged.config import JudgedConfig
from backend.leaderboards.config import AnyConfig, columns, stderr_columns
from backend.storage.evaluations import Evaluation
from backend.storage.model_metadata import ModelMetadata

# The reference's cluster: 5.6 kW at 269.8 g CO₂ per kWh.
POWER_KW = 5.6
CARBON_G_PER_KWH = 269.8

REFERENCE_COLUMNS: tuple[str, ...] = (
    "eval_name", "Precision", "Type", "T", "Weight type", "Architecture", "Model", "fullname", "Model sha",
    "Average ⬆️", "Hub License", "Hub ❤️", "#Params (B)", "Available on the hub", "MoE", "Flagged",
    "Chat Template", "CO₂ cost (kg)", "IFEval Raw", "IFEval", "BBH Raw", "BBH", "MATH Lvl 5 Raw", "MATH Lvl 5",
    "GPQA Raw", "GPQA", "MUSR Raw", "MUSR", "MMLU-PRO Raw", "MMLU-PRO", "Merged", "Official Providers",
    "Upload To Hub Date", "Submission Date", "Generation", "Base Model",
)  # fmt: skip
OUR_COLUMNS: tuple[str, ...] = (
    "Leaderboard", "Config hash", "Harness version", "Request id", "Limit", "Evaluated at", "Result version",
    "Rescored",
)  # fmt: skip

# The reference's model type labels and their emoji.
TYPE_LABELS: dict[ModelType, tuple[str, str]] = {
    ModelType.PRETRAINED: ("🟢", "🟢 pretrained"),
    ModelType.CONTINUOUSLY_PRETRAINED: ("🟩", "🟩 continuously pretrained"),
    ModelType.FINE_TUNED: ("🔶", "🔶 fine-tuned on domain-specific datasets"),
    ModelType.CHAT: ("💬", "💬 chat models (RLHF, DPO, IFT, ...)"),
    ModelType.MERGE: ("🤝", "🤝 base merges and moerges"),
}
_STRINGS = {"eval_name", "Precision", "Type", "T", "Weight type", "Architecture", "Model", "fullname",
            "Model sha", "Hub License", "Upload To Hub Date", "Submission Date", "Base Model", "Leaderboard",
            "Config hash", "Harness version", "Evaluated at", "Rescored"}  # fmt: skip
BOOL_COLUMNS = {"Available on the hub", "MoE", "Flagged", "Chat Template", "Merged", "Official Providers"}
_INTS = {"Hub ❤️", "Generation", "Request id", "Limit", "Result version"}


@dataclass(frozen=True)
class Context:
    """What the table shows beside the results: moderation, and the Hub's current metadata."""

    flagged: frozenset[str]  # model ids
    official_providers: frozenset[str]  # namespaces
    hub: Mapping[str, ModelMetadata] = field(default_factory=dict)  # refreshed Hub metadata, by model id


def co2_cost_kg(total_evaluation_time_seconds: float | None) -> float:
    """The reference's formula; -1 when the time is missing or not positive."""
    seconds = total_evaluation_time_seconds
    if seconds is None or not isinstance(seconds, int | float) or math.isnan(seconds) or seconds <= 0:
        return -1.0
    return seconds / 3600 * POWER_KW * CARBON_G_PER_KWH / 1000


def is_moe(architectures: tuple[str, ...]) -> bool:
    """Mixture of experts, as far as the architecture names tell (MixtralForCausalLM, Qwen2MoeForCausalLM...)."""
    return any(
        "moe" in a.lower() or a.lower().startswith(("mixtral", "dbrx", "jamba")) for a in architectures
    )


def table_columns(config: AnyConfig) -> list[str]:
    if isinstance(config, JudgedConfig):
        from backend.publish.judged_table import judged_columns

        return judged_columns(config)
    return [*REFERENCE_COLUMNS, *stderr_columns(config), *OUR_COLUMNS]


def default_sort(config: AnyConfig) -> str:
    """The column a leaderboard is ranked by unless asked otherwise."""
    return config.scoring.sort if isinstance(config, JudgedConfig) else config.average.column


def stderr_column(config: AnyConfig, column: str) -> str:
    """The column holding ``column``'s standard error (the rank ranges read it; absent: none)."""
    if isinstance(config, JudgedConfig):
        from backend.publish.judged_table import STDERRS

        return STDERRS.get(column, "")
    return f"{column} stderr"


def build_row(
    evaluation: Evaluation, request: EvalRequest, config: AnyConfig, context: Context
) -> dict[str, Any]:
    provenance = evaluation.provenance
    emoji, label = TYPE_LABELS[request.model_type]
    org = request.model.split("/", 1)[0]
    harness = provenance.get("harness") or {}
    hub = context.hub.get(request.model)
    row: dict[str, Any] = {
        "eval_name": f"{request.model.replace('/', '_')}_{request.precision.value}",
        "Precision": request.precision.value,
        "Type": label,
        "T": emoji,
        "Weight type": request.weight_type.value,
        "Architecture": ",".join(request.architectures) or "?",
        "Model": f"[{request.model}](https://huggingface.co/{request.model})",
        "fullname": request.model,
        "Model sha": request.sha,
        "Hub License": hub.license if hub is not None and hub.license is not None else request.license,
        "Hub ❤️": hub.likes if hub is not None else 0,
        "#Params (B)": request.params_b,
        "Available on the hub": hub.available if hub is not None else True,
        "MoE": is_moe(request.architectures),
        "Flagged": request.model in context.flagged,
        "Chat Template": bool(provenance.get("use_chat_template", request.use_chat_template)),
        "CO₂ cost (kg)": co2_cost_kg(provenance.get("total_evaluation_time_seconds")),
        "Merged": request.model_type is ModelType.MERGE,
        "Official Providers": org in context.official_providers,
        "Upload To Hub Date": None,
        "Submission Date": request.submitted_at.strftime("%Y-%m-%d"),
        "Generation": 1 if request.base_model else 0,
        "Base Model": request.base_model or request.model,
        "Leaderboard": evaluation.leaderboard,
        "Config hash": evaluation.config_hash,
        "Harness version": harness.get("version"),
        "Request id": request.id,
        "Limit": provenance.get("limit"),
        "Evaluated at": evaluation.finished_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Result version": evaluation.version,
        "Rescored": ",".join(dict.fromkeys(r["benchmark"] for r in provenance.get("rescores", []))) or None,
    }
    if isinstance(config, JudgedConfig):
        from backend.publish.judged_table import judged_row

        return judged_row(row, evaluation, request, config)
    for name in columns(config):
        row[name] = _float(evaluation.scores.get(name))
    for name in stderr_columns(config):
        row[name] = _float(evaluation.stderrs.get(name))
    return row


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _schema(names: list[str], judged: bool) -> pa.Schema:
    from backend.publish.judged_table import INT_COLUMNS, STRING_COLUMNS

    def kind(name: str) -> pa.DataType:
        if name in _STRINGS or (judged and name in STRING_COLUMNS):
            return pa.string()
        if name in BOOL_COLUMNS:
            return pa.bool_()
        if name in _INTS or (judged and name in INT_COLUMNS):
            return pa.int64()
        return pa.float64()

    return pa.schema([pa.field(name, kind(name)) for name in names])


def to_arrow(rows: list[dict[str, Any]], config: AnyConfig) -> pa.Table:
    names = table_columns(config)
    schema = _schema(names, isinstance(config, JudgedConfig))
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer)
    return buffer.getvalue()
