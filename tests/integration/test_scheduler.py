"""The scheduler against real databases: two `leaderboard scheduler` processes on one PostgreSQL, local runs
cancelled and handed back, runs that cannot start, Hub metadata refresh, job locks."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.app import App
from backend.domain import ModelType, Status, Submission
from backend.evaluation.runner import Runner
from backend.executors.local import LocalExecutor
from backend.executors.slurm import SlurmExecutor
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.scheduler.locks import job_lock
from backend.scheduler.metadata import MetadataRefresher
from backend.scheduler.runs import RunCoordinator
from backend.settings import Settings
from backend.storage.database import Database
from backend.storage.model_metadata import ModelMetadataRepository
from tests.commands import clean_env, leaderboard
from tests.integration.conftest import new_request


def _scheduler(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "--log-level", "INFO", "scheduler", "--scheduler-id", name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_schedulers_on_one_postgres_never_dispatch_a_request_twice(app, database_url, tmp_path):
    count = 12
    ids = [app.requests.create(new_request(model=f"org/m{i}"), app.clock(), None).id for i in range(count)]
    work = tmp_path / "work"
    env = clean_env(
        LEADERBOARD_DATABASE_URL=database_url,
        LEADERBOARD_WORK_DIR=str(work),
        LEADERBOARD_MODEL_STORE=str(tmp_path / "empty-store"),
        # Every run fails at once, for a reason that is not retried: each request is run exactly once.
        LEADERBOARD_CONFIG=str(tmp_path / "no-such-config.yaml"),
        LEADERBOARD_EXECUTOR="local",
        LEADERBOARD_LOCAL_SLOTS="2",
        LEADERBOARD_SCHEDULER_POLL_SECONDS="0.2",
        LEADERBOARD_HEARTBEAT_SECONDS="0.5",
    )
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = [_scheduler(env, "a", logs[0]), _scheduler(env, "b", logs[1])]
    try:
        deadline = time.monotonic() + 240
        while any(app.requests.get(i).status is not Status.FAILED for i in ids):
            assert all(p.poll() is None for p in processes), "a scheduler exited"
            assert time.monotonic() < deadline, "\n".join(log.read_text()[-2000:] for log in logs)
            time.sleep(0.5)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in processes]
    assert codes == [0, 0]
    dispatchers = set()
    for request_id in ids:
        request = app.requests.get(request_id)
        assert request.attempts == 1
        assert "no-such-config.yaml" in str(request.failure_reason)
        history = app.requests.history(request_id)
        claims = [h for h in history if h.to_status is Status.RUNNING]
        assert len(claims) == 1, history
        dispatchers.add(claims[0].actor.split(":")[1])
        runs = sorted(
            p.name
            for p in (work / "runs" / f"request-{request_id}").iterdir()
            if p.name.startswith("attempt")
        )
        assert runs == ["attempt-1"]
        assert (work / "runs" / f"request-{request_id}" / "attempt-1" / "error.json").is_file()
    assert dispatchers == {"a", "b"}  # both schedulers took part


@pytest.fixture
def tiny_store(tmp_path: Path) -> LocalModelStore:
    store = LocalModelStore(tmp_path / "models")
    build_tiny_model(store, "acme/tiny-a")
    build_tiny_model(store, "acme/tiny-b")
    return store


def _submit(app: App, model: str) -> int:
    return app.submissions.submit(Submission(model=model, sender="alice", model_type=ModelType.PRETRAINED)).id


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_local_runs_stop_when_cancelled_and_go_back_to_the_queue_when_the_scheduler_stops(
    database_url, tiny_store, tmp_path
):
    from backend.evaluation.synthetic import synthesize

    synthesize(tmp_path / "mirror")
    settings = Settings(
        database_url=database_url,
        model_store=tiny_store.root,
        data_mirror=tmp_path / "mirror",
        work_dir=tmp_path / "work",
        eval_device="cpu",
        eval_limit=1,
    )
    app = App.open(settings, source=tiny_store)
    first, second = _submit(app, "acme/tiny-a"), _submit(app, "acme/tiny-b")
    executor = LocalExecutor(Runner(3600, tmp_path / "hub"), slots=1)
    runs = RunCoordinator(app.worker, executor, "s1")

    assert [r.id for r in runs.dispatch()] == [first]  # one slot: one run
    running = app.requests.get(first)
    assert running.status is Status.RUNNING and running.job_id and running.worker_id.startswith("local:s1:")
    pid = int(running.job_id.rsplit("-", 1)[1])
    assert _alive(pid)
    runs.heartbeat()
    assert app.requests.get(first).heartbeat_at > running.heartbeat_at

    app.admin.cancel(first, "admin")
    runs.heartbeat()  # the lease is gone: the run is stopped and its slot freed
    assert not _alive(pid)
    assert [r.id for r in runs.dispatch()] == [second]
    second_pid = int(str(app.requests.get(second).job_id).rsplit("-", 1)[1])

    runs.shutdown()
    assert not _alive(second_pid)
    assert app.requests.get(first).status is Status.CANCELLED
    back = app.requests.get(second)
    assert back.status is Status.PENDING and back.attempts == 1
    assert "the scheduler was stopped during the run" in str(app.requests.history(second)[-1].reason)
    assert app.evaluations.all() == []
    app.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_run_the_executor_cannot_start_goes_back_to_the_queue_without_counting(
    app, database_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # sbatch cannot be found
    request = app.requests.create(new_request(), app.clock(), None)
    executor = SlurmExecutor(app.settings, max_jobs=4)
    runs = RunCoordinator(app.worker, executor, "s1")
    assert runs.dispatch() == []
    back = app.requests.get(request.id)
    assert back.status is Status.PENDING and back.attempts == 0 and back.job_id is None
    reason = str(app.requests.history(request.id)[-1].reason)
    assert reason.startswith("the slurm executor could not start the run: `sbatch")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_hub_metadata_of_queued_and_finished_models_is_refreshed_through_the_model_source(
    database_url, tiny_store, clock
):
    app = App.open(Settings(database_url=database_url, model_store=tiny_store.root), source=tiny_store)
    app.clock = clock
    queued = _submit(app, "acme/tiny-a")
    cancelled = _submit(app, "acme/tiny-b")
    app.admin.cancel(cancelled, "admin")
    repository = ModelMetadataRepository(app.db)
    refresher = MetadataRefresher(tiny_store, repository, clock, max_age_seconds=3600)

    assert refresher.refresh() == 1  # only the queued model: cancelled requests are not followed
    entry = repository.get("acme/tiny-a")
    assert entry is not None and (entry.available, entry.likes, entry.license) == (True, 0, "apache-2.0")
    assert entry.refreshed_at == clock.now
    assert repository.get("acme/tiny-b") is None
    assert refresher.refresh() == 0  # fresh enough

    shutil.rmtree(tiny_store.repo_dir("acme/tiny-a"))
    clock.advance(3601)
    assert refresher.refresh() == 1
    gone = repository.get("acme/tiny-a")
    assert gone is not None and not gone.available and gone.refreshed_at == clock.now
    assert app.requests.get(queued).status is Status.PENDING  # metadata never moves a request
    app.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_job_lock_is_held_by_one_scheduler_at_a_time(database_url):
    first, second = Database(database_url), Database(database_url)
    try:
        with job_lock(first, "publish") as held:
            assert held
            with job_lock(second, "publish") as other:
                assert not other
            with job_lock(second, "requests_export") as unrelated:
                assert unrelated
        with job_lock(second, "publish") as again:
            assert again
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scheduler_once_waits_for_the_local_runs_it_started(app, database_url, tmp_path):
    request = app.requests.create(new_request(), app.clock(), None)
    env = clean_env(
        LEADERBOARD_DATABASE_URL=database_url,
        LEADERBOARD_WORK_DIR=str(tmp_path / "work"),
        LEADERBOARD_MODEL_STORE=str(tmp_path / "empty-store"),
        LEADERBOARD_CONFIG=str(tmp_path / "no-such-config.yaml"),
        LEADERBOARD_SCHEDULER_POLL_SECONDS="0.2",
    )
    done = leaderboard(env, "scheduler", "--once", "--scheduler-id", "once", timeout=120)
    assert done.returncode == 0, done.stderr
    ended = app.requests.get(request.id)
    assert ended.status is Status.FAILED and ended.attempts == 1  # run, collected, not handed back
    assert "no-such-config.yaml" in str(ended.failure_reason)
