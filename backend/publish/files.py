"""The published files other than the table: results files, per-sample details, the dataset card, and the
atomic write every local file goes through."""

from __future__ import annotations

import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from backend.domain import EvalRequest
from backend.publish.table import co2_cost_kg
from backend.storage.evaluations import Evaluation

TABLE_PARQUET = "leaderboard.parquet"
TABLE_CSV = "leaderboard.csv"
CARD = "README.md"
REQUESTS_FOLDER = "requests"
RESULTS_FOLDER = "results"
DETAILS_FOLDER = "details"

_DETAILS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.int64()),
        ("doc", pa.string()),
        ("target", pa.string()),
        ("arguments", pa.string()),
        ("resps", pa.string()),
        ("filtered_resps", pa.string()),
        ("metrics", pa.string()),
        ("doc_hash", pa.string()),
        ("prompt_hash", pa.string()),
        ("target_hash", pa.string()),
        ("scores", pa.string()),  # the sample's metric values ({"acc": 1.0, ...}) as JSON
    ]
)


def file_time(when: datetime) -> str:
    """The reference's (and lm-eval's) file-name time: ISO 8601 with ':' replaced by '-'."""
    return when.strftime("%Y-%m-%dT%H-%M-%S.%f")


def time_label(evaluation: Evaluation) -> str:
    """A result version's file-name time: when it was stored (version 1: when its run finished)."""
    return file_time(evaluation.recorded)


def results_path(request: EvalRequest, evaluation: Evaluation) -> str:
    return f"{RESULTS_FOLDER}/{request.model}/results_{time_label(evaluation)}.json"


def results_file(request: EvalRequest, evaluation: Evaluation) -> bytes:
    """The harness's aggregated output plus our block: scores and everything needed to reproduce them."""
    provenance = evaluation.provenance
    seconds = provenance.get("total_evaluation_time_seconds")
    block = {
        "scores": evaluation.scores,
        "stderrs": evaluation.stderrs,
        "config": evaluation.leaderboard,
        "config_hash": evaluation.config_hash,
        "harness": provenance.get("harness"),
        "transformers_version": provenance.get("transformers_version"),
        "task_set": provenance.get("task_set"),
        "task_hashes": provenance.get("task_hashes"),
        "dataset_revisions": provenance.get("dataset_revisions"),
        "data_source": provenance.get("data_source"),
        "seeds": provenance.get("seeds"),
        "limit": provenance.get("limit"),
        "model": request.model,
        "model_sha": request.sha,
        "precision": request.precision.value,
        "weight_type": request.weight_type.value,
        "base_model": request.base_model,
        "use_chat_template": provenance.get("use_chat_template", request.use_chat_template),
        "hardware": provenance.get("hardware"),
        "total_evaluation_time_seconds": seconds,
        "co2_cost_kg": co2_cost_kg(seconds),
        "command": provenance.get("command"),
        "request_id": request.id,
        "evaluated_at": evaluation.finished_at.isoformat(),
        "version": evaluation.version,
        "recorded_at": evaluation.recorded.isoformat(),
        "rescores": provenance.get("rescores", []),
    }
    data = {**evaluation.results, "leaderboard": block}
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n").encode()


def new_samples_files(evaluation: Evaluation) -> list[str]:
    """The samples files first published with this version: all of a run's; a re-score's own (the tasks it
    re-scored), since the other tasks' samples are those of the version before."""
    rescores = evaluation.provenance.get("rescores") or []
    if evaluation.version > 1 and rescores:
        return list(rescores[-1].get("samples_files") or [])
    return list(evaluation.provenance.get("samples_files") or [])


def task_of(samples_file: str) -> str:
    """lm-eval's samples_<task>_<time>.jsonl -> <task> (the time has no '_')."""
    stem = Path(samples_file).name.removeprefix("samples_").removesuffix(".jsonl")
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def details_dir(model: str) -> str:
    return f"{DETAILS_FOLDER}/{model.replace('/', '__')}"


def details_config(model: str, task: str) -> str:
    """The dataset card config name that loads one model's details for one task."""
    return f"details_{model.replace('/', '__')}__{task}"


def details_path(request: EvalRequest, evaluation: Evaluation, task: str) -> str:
    return f"{details_dir(request.model)}/{task}/{request.precision.value}_{time_label(evaluation)}.parquet"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def details_file(samples_file: Path) -> bytes:
    """One lm-eval samples jsonl file as parquet; nested values are kept as JSON text."""
    known = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "metrics"}
    known |= {"doc_hash", "prompt_hash", "target_hash"}
    rows = []
    with samples_file.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            sample = json.loads(line)
            metrics = sample.get("metrics") or []
            rows.append(
                {
                    "doc_id": sample.get("doc_id"),
                    "doc": _json(sample.get("doc")),
                    "target": _json(sample.get("target")),
                    "arguments": _json(sample.get("arguments")),
                    "resps": _json(sample.get("resps")),
                    "filtered_resps": _json(sample.get("filtered_resps")),
                    "metrics": _json(metrics),
                    "doc_hash": sample.get("doc_hash"),
                    "prompt_hash": sample.get("prompt_hash"),
                    "target_hash": sample.get("target_hash"),
                    "scores": _json({k: v for k, v in sample.items() if k in metrics and k not in known}),
                }
            )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=_DETAILS_SCHEMA), buffer, compression="zstd")
    return buffer.getvalue()


def card(
    title: str,
    leaderboard: str,
    details: list[tuple[str, str, str]],
    judged: list[tuple[str, str, str]] | None = None,
    arena: list[tuple[str, str, str]] | None = None,
) -> bytes:
    """The dataset card: `configs:` makes load_dataset(folder) return the table, each (model, task)'s
    details loadable by name (details_<org>__<model>__<task>), each judged leaderboard's table by the
    leaderboard's name (``judged`` lists (name, title, table path) of those published), and the arena's
    battles and ratings (``arena`` lists (config name, what it holds, path): arena_files.card_configs).

    ``details`` lists (model, task, path) oldest first: each published file is a split named by its time
    (as the reference's details datasets), and split "latest" is the last one.
    """
    configs: list[dict[str, Any]] = [
        {"config_name": "default", "data_files": [{"split": "train", "path": TABLE_PARQUET}], "default": True}
    ]
    by_config: dict[tuple[str, str], dict[str, list[str]]] = {}
    for model, task, path in details:
        splits = by_config.setdefault((model, task), {})
        splits.setdefault(_split_name(path), []).append(path)
    for (model, task), splits in sorted(by_config.items()):
        latest = list(splits.values())[-1]
        data_files = [{"split": name, "path": paths} for name, paths in splits.items()]
        configs.append(
            {
                "config_name": details_config(model, task),
                "data_files": [*data_files, {"split": "latest", "path": latest}],
            }
        )
    judged = judged or []
    arena = arena or []
    for name, _, path in [*judged, *arena]:
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": path}]})
    header = yaml.safe_dump({"configs": configs}, sort_keys=False, allow_unicode=True)
    body = (
        f"# {title}\n\n"
        f"Results of the `{leaderboard}` leaderboard.\n\n"
        f"- `{TABLE_PARQUET}` / `{TABLE_CSV}`: one row per (model, sha, precision); the first 36 columns are "
        "the Open LLM Leaderboard's, in its order, then standard errors and provenance.\n"
        f"- `{RESULTS_FOLDER}/<org>/<model>/results_<time>.json`: the harness's aggregated output, with a "
        "`leaderboard` block (normalized scores, config hash, versions, task hashes, dataset revisions, seeds, "
        "CO₂ estimate and the command that reproduces the run).\n"
        f"- `{DETAILS_FOLDER}/<org>__<model>/<task>/<precision>_<time>.parquet`: per-sample outputs "
        "(config `details_<org>__<model>__<task>`).\n"
        f"- `{REQUESTS_FOLDER}/`: the requests and votes, in the reference's requests-dataset layout.\n\n"
        "Hub ❤️, Available on the hub and Hub License are the Hub's metadata as last refreshed (0 likes and "
        "available before the first refresh); Upload To Hub Date is empty: it is not tracked. Generation is 0 "
        "without a declared base model, 1 with one.\n"
    )
    if judged:
        body += (
            "\n## Judged leaderboards\n\n"
            "A judge compares each model's answers with a reference model's (AlpacaEval's method). Each has its "
            "folder `judged/<leaderboard>/`: `leaderboard.parquet` / `leaderboard.csv` (AlpacaEval's columns, by "
            "its names, then the model's identity and the judgement's provenance), and per model "
            "`results/<org>__<model>/model_outputs.json` and `results/<org>__<model>/<annotator>/annotations.json` "
            "in AlpacaEval's layout.\n\n"
        )
        body += "".join(
            f'- `{name}` ({title}): `load_dataset(repo, "{name}")`\n' for name, title, _ in judged
        )
    if arena:
        body += (
            "\n## The arena\n\n"
            "Pairwise battles: two anonymous models answer a user's prompt, the user votes, the names are "
            "shown. `arena/<name>/battles.parquet` holds every voted battle in the public Chatbot Arena's "
            "format (question_id, model_a, model_b, winner, turn, anony, tstamp, and conversation_a / "
            "conversation_b as lists of {role, content}; `mode` says live, static or imported), without the "
            "voters' names or addresses. `arena/<name>/ratings.parquet` / `ratings.csv`: Bradley-Terry "
            "ratings on the arena's scale of the votes cast with both names hidden (rank, model, rating, "
            "rating_lower, rating_upper, battles).\n\n"
        )
        body += "".join(f'- `{name}` ({title}): `load_dataset(repo, "{name}")`\n' for name, title, _ in arena)
    return f"---\n{header}---\n\n{body}".encode()


def _split_name(details_file: str) -> str:
    """<precision>_<time>.parquet -> the time with '-' as '_' (a split name is letters, digits, '_', '.')."""
    time = PurePosixPath(details_file).stem.rsplit("_", 1)[-1]
    return time.replace("-", "_")


def write_atomic(path: Path, data: bytes) -> bool:
    """Write `data` to `path` through a temporary file and a rename; False (nothing written) when the file
    already holds exactly these bytes."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
