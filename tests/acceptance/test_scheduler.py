"""`leaderboard scheduler` on the embedded default, for real: the local executor evaluates a submitted tiny
model with the pinned harness, and the other jobs publish the result, mirror the queue and refresh the
model's metadata."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from backend.app import App
from backend.domain import Status
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.model_metadata import ModelMetadataRepository
from tests.commands import clean_env, leaderboard

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_scheduler_evaluates_publishes_mirrors_and_refreshes_on_its_own(database_url, tmp_path):
    from backend.evaluation.synthetic import synthesize

    store = LocalModelStore(tmp_path / "models")
    build_tiny_model(store, "acme/tiny-local")
    synthesize(tmp_path / "mirror")
    env = clean_env(
        LEADERBOARD_DATABASE_URL=database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_DATA_MIRROR=str(tmp_path / "mirror"),
        LEADERBOARD_WORK_DIR=str(tmp_path / "work"),
        LEADERBOARD_RESULTS=str(tmp_path / "results"),
        LEADERBOARD_REQUESTS_EXPORT_DIR=str(tmp_path / "requests-mirror"),
        LEADERBOARD_EVAL_LIMIT="1",
        LEADERBOARD_EVAL_DEVICE="cpu",
        LEADERBOARD_EVAL_BATCH_SIZE="8",
        LEADERBOARD_SCHEDULER_POLL_SECONDS="1",
        LEADERBOARD_HEARTBEAT_SECONDS="2",
        LEADERBOARD_SCHEDULER_PUBLISH_SECONDS="2",
        LEADERBOARD_SCHEDULER_REQUESTS_EXPORT_SECONDS="2",
    )
    submitted = leaderboard(
        env, "submit", "acme/tiny-local", "--user", "alice", "--model-type", "chat", "--json", timeout=120
    )
    assert submitted.returncode == 0, submitted.stderr
    request_id = json.loads(submitted.stdout)["id"]
    log = tmp_path / "scheduler.log"
    with log.open("w") as out:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "--log-level", "INFO", "scheduler"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    app = App.open(Settings(database_url=database_url))
    table = tmp_path / "results" / "leaderboard.parquet"
    try:
        deadline = time.monotonic() + 500
        while not table.is_file():
            assert scheduler.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        time.sleep(3)  # one more mirror round after the FINISHED transition
    finally:
        scheduler.send_signal(signal.SIGTERM)
        code = scheduler.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]

    request = app.requests.get(request_id)
    assert request.status is Status.FINISHED and request.attempts == 1
    assert str(request.job_id).startswith("local-")
    (evaluation,) = app.evaluations.all()
    assert evaluation.request_id == request_id and evaluation.worker_id.startswith("local:")
    (row,) = pq.read_table(table).to_pylist()
    assert row["fullname"] == "acme/tiny-local" and row["Model sha"] == request.sha
    mirrored = list((tmp_path / "requests-mirror").rglob("*.json"))
    assert len(mirrored) == 1 and json.loads(mirrored[0].read_text())["status"] == "FINISHED"
    metadata = ModelMetadataRepository(app.db).get("acme/tiny-local")
    assert metadata is not None and metadata.available and metadata.license == "apache-2.0"
    app.close()
