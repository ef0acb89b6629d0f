"""Publishing: the leaderboard table and dataset card for many evaluated models, and one more model.

Setup stores finished requests with realistic evaluations straight into the tables (Core executemany): the
harness output of a real run of the pinned harness (tests/fixtures/results, 39 subtasks with their
configs), scores varied per model, provenance as the worker writes it, no per-sample files. Measured:

- table and card: from the publication rows, the table rows, parquet, CSV and the dataset card, built and
  written to a folder (the figure the target is about);
- first publish: ``PublishService.publish`` with every model in the outbox (results files, table, card,
  requests export);
- incremental publish: one more model evaluated, then ``publish`` again (what the worker does after each
  evaluation with LEADERBOARD_PUBLISH_AFTER_EVALUATION).
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from backend.app import App
from backend.domain import ModelType, Precision, Status, WeightType
from backend.leaderboards.config import LeaderboardConfig, config_hash, load_config
from backend.leaderboards.normalize import normalize, standard_errors
from backend.publish.targets import LocalFolderTarget
from backend.settings import Settings
from backend.storage.evaluations import Evaluation
from backend.storage.requests import NewRequest
from backend.storage.schema import evaluations, requests
from bench.stats import target

SIZES = {"full": {"models": 10_000}, "tiny": {"models": 20}}
BATCH = 1_000
TARGET_FULL_SECONDS = 5.0
TARGET_INCREMENTAL_SECONDS = 1.0
RESULTS_FIXTURE = (
    Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "results" / "open_llm_v2_results.json"
)


def _scores(config: LeaderboardConfig, base: dict[str, float | None], rng: random.Random) -> dict[str, Any]:
    return {k: (v * rng.uniform(0.5, 1.5) if isinstance(v, float) else v) for k, v in base.items()}


def _load(app: App, n: int, results: dict[str, Any], config: LeaderboardConfig) -> None:
    rng = random.Random(0)
    now = datetime.now(UTC) - timedelta(days=1)
    scores, stderrs = normalize(results, config), standard_errors(results, config)
    digest = config_hash(config)
    for first in range(1, n + 1, BATCH):
        ids = range(first, min(first + BATCH, n + 1))
        request_rows, evaluation_rows = [], []
        for i in ids:
            model = f"org-{i % 313}/model-{i}"
            request_rows.append(
                {
                    "id": i, "model": model, "namespace": f"org-{i % 313}", "revision": "main",
                    "sha": f"{i:040x}", "precision": "bfloat16", "weight_type": "Original",
                    "model_type": "fine-tuned", "base_model": None, "use_chat_template": True, "params_b": 7.2,
                    "architectures": ["LlamaForCausalLM"], "license": "apache-2.0", "sender": f"user-{i}",
                    "status": Status.FINISHED.value, "votes": 1, "attempts": 1, "submitted_at": now,
                    "updated_at": now, "started_at": now,
                }
            )  # fmt: skip
            evaluation_rows.append(
                {
                    "id": i, "request_id": i, "leaderboard": config.name, "config_hash": digest,
                    "scores": _scores(config, scores, rng), "stderrs": stderrs, "results": results,
                    "provenance": provenance(model, config, digest), "artifacts": f"/runs/request-{i}",
                    "attempt": 1, "worker_id": "worker-1", "started_at": now, "finished_at": now,
                    "duration_seconds": 3600.0, "version": 1, "recorded_at": now,
                }
            )  # fmt: skip
        with app.db.transaction() as conn:
            conn.execute(insert(requests), request_rows)
            conn.execute(insert(evaluations), evaluation_rows)


def provenance(model: str, config: LeaderboardConfig, digest: str) -> dict[str, Any]:
    return {
        "leaderboard": config.name,
        "config_hash": digest,
        "harness": {"package": "lm-eval", "version": "0.4.13"},
        "transformers_version": "5.23.0",
        "task_set": config.task_set,
        "seeds": {"random": 0, "numpy": 1234, "torch": 1234, "fewshot": 1234},
        "limit": None,
        "model": model,
        "precision": "bfloat16",
        "use_chat_template": True,
        "command": f"leaderboard run {model} --precision bfloat16",
        "hardware": {"gpus": ["NVIDIA H100 80GB HBM3"]},
        "total_evaluation_time_seconds": 3600.0,
        "samples_files": [],
    }


def _one_more(app: App, n: int, results: dict[str, Any], config: LeaderboardConfig) -> None:
    """A model submitted, claimed and finished through the services, as the worker stores it."""
    new = NewRequest(
        model=f"org-new/model-{n + 1}", revision="main", sha="f" * 40, precision=Precision.BFLOAT16,
        weight_type=WeightType.ORIGINAL, model_type=ModelType.CHAT, base_model=None, use_chat_template=True,
        params_b=7.2, architectures=("LlamaForCausalLM",), license="apache-2.0", sender="alice",
    )  # fmt: skip
    request = app.requests.create(new, app.clock(), None)
    claimed = app.queue.claim("worker-1")
    assert claimed is not None and claimed.id == request.id
    now = app.clock()
    evaluation = Evaluation(
        request_id=request.id, leaderboard=config.name, config_hash=config_hash(config),
        scores=normalize(results, config), stderrs=standard_errors(results, config), results=results,
        provenance=provenance(request.model, config, config_hash(config)), artifacts="/runs/new",
        attempt=1, worker_id="worker-1", started_at=now, finished_at=now, duration_seconds=3600.0,
    )  # fmt: skip
    app.evaluations.store_and_finish(evaluation, now)


def table_and_card(
    app: App, config: LeaderboardConfig, target_folder: LocalFolderTarget
) -> tuple[float, int]:
    """The table (parquet and CSV) and dataset card over every result published to a target, built as a
    publish builds them (``PublishService.table_files`` over its publication rows) and written; (seconds,
    rows)."""
    started = time.perf_counter()
    rows = app.publications.for_target(target_folder.key, config.name)
    by_id = {r.id: r for r in app.requests.all()}
    target_folder.put(app.publishing.table_files(rows, by_id), "table and card")
    seconds = time.perf_counter() - started
    return seconds, len(rows)


def run(size: str, root: Path) -> dict[str, Any]:
    n = SIZES[size]["models"]
    config = load_config()
    results = json.loads(RESULTS_FIXTURE.read_text())
    app = App.open(Settings(database_url=f"sqlite:///{root / 'publish.db'}", results=str(root / "published")))
    try:
        started = time.perf_counter()
        _load(app, n, results, config)
        load_seconds = time.perf_counter() - started
        target_folder = LocalFolderTarget(root / "published")
        started = time.perf_counter()
        first = app.publishing.publish(target_folder)
        first_seconds = time.perf_counter() - started
        table_seconds, table_rows = table_and_card(app, config, target_folder)
        _one_more(app, n, results, config)
        started = time.perf_counter()
        incremental = app.publishing.publish(target_folder)
        incremental_seconds = time.perf_counter() - started
    finally:
        app.close()
    assert first.published == n and incremental.published == 1, (first, incremental)
    return {
        "database": "sqlite",
        "models": n,
        "results_json_bytes_per_model": len(json.dumps(results)),
        "per_sample_details": "none (no samples files): results files, table, card and requests export only",
        "load_seconds": load_seconds,
        "table_rows": table_rows,
        "table_and_card_seconds": table_seconds,
        "first_publish_seconds": first_seconds,
        "first_publish_files": len(first.changed_files),
        "incremental_publish_seconds": incremental_seconds,
        "incremental_publish_files": len(incremental.changed_files),
        "target_full_seconds": target(table_seconds, TARGET_FULL_SECONDS),
        "target_incremental_seconds": target(incremental_seconds, TARGET_INCREMENTAL_SECONDS),
    }
