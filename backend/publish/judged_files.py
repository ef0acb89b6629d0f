"""A judged leaderboard's place in the results dataset: ``judged/<leaderboard>/``, with its table and each
model's outputs and annotations in AlpacaEval's layout (``results/<generator>/model_outputs.json`` and
``results/<generator>/<annotator>/annotations.json``), so alpaca-eval and our `leaderboard judge score` read
them as they read AlpacaEval's own results."""

from __future__ import annotations

import logging
from pathlib import Path

from backend.domain import EvalRequest
from backend.judged.annotations import MAX_FILE_BYTES, read_limited
from backend.judged.config import JudgedConfig
from backend.judged.run import generator_name
from backend.storage.evaluations import Evaluation

log = logging.getLogger(__name__)

JUDGED_FOLDER = "judged"
TABLE_PARQUET = "leaderboard.parquet"
TABLE_CSV = "leaderboard.csv"
OUTPUTS = "model_outputs.json"
ANNOTATIONS = "annotations.json"


def board_folder(config: JudgedConfig) -> str:
    return f"{JUDGED_FOLDER}/{config.name}"


def table_paths(config: JudgedConfig) -> tuple[str, str]:
    return f"{board_folder(config)}/{TABLE_PARQUET}", f"{board_folder(config)}/{TABLE_CSV}"


def model_folder(config: JudgedConfig, request: EvalRequest) -> str:
    return f"{board_folder(config)}/results/{generator_name(request.model)}"


def judged_result_files(
    config: JudgedConfig, request: EvalRequest, evaluation: Evaluation
) -> dict[str, bytes]:
    """The model's outputs and annotations as the run (or the import) left them, by their dataset paths; a
    file that is gone from the work folder is left out (and logged), never a stop for the others."""
    folder = model_folder(config, request)
    annotator = (evaluation.provenance.get("judged") or {}).get("annotator") or config.judge.annotator
    wanted = {
        f"{folder}/{OUTPUTS}": evaluation.provenance.get("model_outputs_file"),
        f"{folder}/{annotator}/{ANNOTATIONS}": evaluation.provenance.get("annotations_file"),
    }
    files: dict[str, bytes] = {}
    for path, source in wanted.items():
        if not isinstance(source, str):
            continue
        try:
            data = read_limited(Path(source), MAX_FILE_BYTES)
        except OSError:
            data = None
        if data is None:
            log.warning("judged file missing", extra={"path": source, "request_id": request.id})
            continue
        files[path] = data
    return files
