"""The evaluation loop for real: the CLI worker runs the pinned harness on a tiny local model over
synthesized data for all 39 subtasks, normalizes and stores the scores; killed workers and broken models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from backend.app import App
from backend.domain import Status
from backend.hub.local_store import LocalModelStore
from backend.leaderboards.config import columns, load_config
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from tests.commands import clean_env, leaderboard

pytestmark = pytest.mark.slow
SUBTASKS = 39


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalModelStore, Path]:
    from backend.evaluation.synthetic import synthesize

    store = LocalModelStore(tmp_path_factory.mktemp("eval-models"))
    build_tiny_model(store, "acme/tiny-chat")
    build_tiny_model(store, "acme/tiny-corrupted", corrupt_weights=True)
    mirror = tmp_path_factory.mktemp("data-mirror")
    synthesize(mirror)
    return store, mirror


def environment(
    database_url: str, store: LocalModelStore, mirror: Path, work: Path, **extra: str
) -> dict[str, str]:
    return clean_env(
        LEADERBOARD_DATABASE_URL=database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_DATA_MIRROR=str(mirror),
        LEADERBOARD_WORK_DIR=str(work),
        LEADERBOARD_EVAL_LIMIT="2",
        LEADERBOARD_EVAL_DEVICE="cpu",
        LEADERBOARD_EVAL_BATCH_SIZE="8",
        **extra,
    )


cli = leaderboard


def submit(env: dict[str, str], model: str) -> dict:
    result = cli(env, "submit", model, "--user", "alice", "--model-type", "chat", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def open_app(env: dict[str, str]) -> App:
    return App.open(Settings(database_url=env["LEADERBOARD_DATABASE_URL"]))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_submitted_model_is_evaluated_on_all_subtasks_and_its_scores_stored(assets, database_url, tmp_path):
    store, mirror = assets
    # The worker publishes after the evaluation, to a folder it cannot create yet (a file is in the way).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    results = blocker / "results"
    env = environment(
        database_url,
        store,
        mirror,
        tmp_path / "work",
        LEADERBOARD_RESULTS=str(results),
        LEADERBOARD_PUBLISH_AFTER_EVALUATION="true",
    )
    request = submit(env, "acme/tiny-chat")
    worked = cli(env, "worker", "--once", "--worker-id", "w1")
    assert worked.returncode == 0, worked.stderr
    assert f"request {request['id']} (acme/tiny-chat): FINISHED" in worked.stdout
    assert "publish failed; the result waits in the outbox" in worked.stderr

    app = open_app(env)
    config = load_config("open_llm_v2")
    assert app.requests.get(request["id"]).status is Status.FINISHED
    evaluation = app.evaluations.get(request["id"], config.name)
    assert evaluation is not None and evaluation.worker_id == "w1" and evaluation.attempt == 1
    subtasks = [t for t in evaluation.results["results"] if t not in evaluation.results.get("groups", {})]
    assert len(set(subtasks) & {s.name for b in config.benchmarks for s in b.subtasks}) == SUBTASKS
    assert list(evaluation.scores) == columns(config)
    for column, value in evaluation.scores.items():
        assert value is not None, column
        assert 0 <= value <= (1 if column.endswith(" Raw") else 100), (column, value)
    provenance = evaluation.provenance
    assert len(provenance["task_hashes"]) >= SUBTASKS
    assert provenance["harness"]["version"] == "0.4.13" and provenance["model_sha"] == request["sha"]
    assert provenance["data_source"] == "mirror" and provenance["dataset_revisions"]
    assert provenance["command"].startswith(f"leaderboard run acme/tiny-chat --revision {request['sha']}")
    assert provenance["limit"] == 2
    samples = [Path(p) for p in provenance["samples_files"]]
    assert len(samples) == SUBTASKS and all(p.is_file() and p.stat().st_size > 0 for p in samples)
    table = cli(env, "scores", "--json")
    (scored,) = json.loads(table.stdout)
    assert scored["fullname"] == "acme/tiny-chat"

    # Nothing was lost: the result waited in the outbox, and the next publish delivers it, once.
    assert app.publications.outbox_count(str(results.resolve())) == 1
    app.close()
    blocker.unlink()
    published = cli(env, "publish", "--json")
    assert published.returncode == 0, published.stderr
    assert (json.loads(published.stdout)["published"], json.loads(published.stdout)["outbox"]) == (1, 0)
    (row,) = pq.read_table(results / "leaderboard.parquet").to_pylist()
    assert row["fullname"] == "acme/tiny-chat" and row["Model sha"] == request["sha"]
    assert [row[c] for c in columns(config)] == [evaluation.scores[c] for c in columns(config)]
    assert scored == {**row, "Evaluated at": scored["Evaluated at"]}  # `scores` shows the published row
    again = cli(env, "publish", "--json")
    assert json.loads(again.stdout)["published"] == 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_model_that_cannot_run_fails_with_the_reason_in_the_queue(assets, database_url, tmp_path):
    store, mirror = assets
    env = environment(database_url, store, mirror, tmp_path / "work")
    request = submit(env, "acme/tiny-corrupted")
    worked = cli(env, "worker", "--once", "--worker-id", "w1")
    assert worked.returncode == 0, worked.stderr
    failed = json.loads(cli(env, "queue", "--status", "failed", "--json").stdout)
    assert [r["id"] for r in failed] == [request["id"]]
    assert failed[0]["failure_reason"].startswith("the model weights cannot be read")
    assert "last lines" not in failed[0]["failure_reason"]  # the log is kept apart from the reason
    assert failed[0]["failure_log_path"].endswith("attempt-1/run.log") and failed[0]["failure_log_tail"]
    assert failed[0]["attempts"] == 1  # not retried: the cause lies in the submission
    assert "the model weights cannot be read" in cli(env, "queue", "--status", "failed").stdout


def _log_shows_generation_started(log: Path) -> bool:
    return log.is_file() and log.read_text(errors="replace").count("Requests remaining") >= 2


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_killed_worker_is_replaced_and_the_result_stored_once_reusing_cached_requests(
    assets, database_url, tmp_path
):
    store, mirror = assets
    work = tmp_path / "work"
    env = environment(
        database_url, store, mirror, work, LEADERBOARD_LEASE_SECONDS="5", LEADERBOARD_HEARTBEAT_SECONDS="1"
    )
    request = submit(env, "acme/tiny-chat")
    first = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--once", "--worker-id", "doomed"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    attempt = work / "runs" / f"request-{request['id']}" / "attempt-1"
    deadline = time.monotonic() + 300
    while not _log_shows_generation_started(attempt / "run.log"):
        assert first.poll() is None, "the first worker ended before it could be killed"
        assert time.monotonic() < deadline, "the run never reached generation"
        time.sleep(0.5)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(attempt / "spec.json")):  # the child dies with its worker
        assert time.monotonic() < deadline, "the evaluation child outlived its killed worker"
        time.sleep(0.2)

    app = open_app(env)
    assert app.requests.get(request["id"]).status is Status.RUNNING  # until the lease expires
    time.sleep(6)
    second = cli(env, "worker", "--once", "--worker-id", "rescuer")
    assert second.returncode == 0, second.stderr
    final = app.requests.get(request["id"])
    assert final.status is Status.FINISHED and final.attempts == 2
    evaluations = app.evaluations.all()
    assert [(e.request_id, e.worker_id, e.attempt) for e in evaluations] == [(request["id"], "rescuer", 2)]
    history = [(h.from_status, h.to_status, h.actor) for h in app.requests.history(request["id"])]
    assert history[1:] == [
        (Status.PENDING, Status.RUNNING, "doomed"),
        (Status.RUNNING, Status.PENDING, "recovery"),
        (Status.PENDING, Status.RUNNING, "rescuer"),
        (Status.RUNNING, Status.FINISHED, "rescuer"),
    ]
    second_log = (attempt.parent / "attempt-2" / "run.log").read_text(errors="replace")
    cached = [
        int(line.split("Cached requests: ")[1].split(",")[0])
        for line in second_log.splitlines()
        if "Cached requests: " in line
    ]
    assert cached and cached[0] > 0, "the second run recomputed what the first had cached"
    app.close()
