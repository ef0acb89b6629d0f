"""A run that ends while the database is down is recorded once it comes back: stored once, with the
FINISHED transition, its attempt not used up, nothing recorded twice. A real run of the pinned harness on
a tiny model, and a real outage: PostgreSQL reached through a proxy that is cut during the run."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from backend.app import App
from backend.domain import EvalRequest, ModelType, Status, Submission
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings

from .outage import TcpProxy

pytestmark = pytest.mark.slow
RETRYING = "database unavailable while recording the ended run; retrying"


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_run_that_ends_during_a_database_outage_is_stored_once_when_it_comes_back(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from backend.evaluation.synthetic import synthesize

    store = LocalModelStore(tmp_path / "models")
    build_tiny_model(store, "acme/tiny")
    synthesize(tmp_path / "mirror")
    common = {
        "model_store": store.root,
        "data_mirror": tmp_path / "mirror",
        "work_dir": tmp_path / "work",
        "eval_device": "cpu",
        "eval_limit": 1,
    }
    direct = App.open(Settings(database_url=database_url, **common), source=store)
    request = direct.submissions.submit(Submission("acme/tiny", "alice", model_type=ModelType.PRETRAINED))
    proxy = TcpProxy(("127.0.0.1", 5432))
    worker = App.open(
        Settings(
            database_url=proxy.url(database_url),
            heartbeat_seconds=0.5,
            store_retry_attempts=100,
            store_retry_base_seconds=0.1,
            store_retry_max_seconds=0.5,
            **common,
        ),
        source=store,
    )
    caplog.set_level(logging.WARNING, logger="backend.services.evaluate")
    outcome: list[EvalRequest | BaseException | None] = []

    def work() -> None:
        try:
            outcome.append(worker.worker.work_once("worker-1"))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        log = tmp_path / "work" / "runs" / f"request-{request.id}" / "attempt-1" / "run.log"
        _wait(
            lambda: direct.requests.get(request.id).status is Status.RUNNING and log.is_file(), 120, "the run"
        )
        proxy.cut()  # the database goes away while the harness runs
        retried = lambda: any(RETRYING in r.getMessage() for r in caplog.records)  # noqa: E731
        _wait(lambda: retried() or not thread.is_alive(), 600, "the run to end")
        time.sleep(1.0)  # a few more failed attempts
        proxy.restore()
        thread.join(120)
    finally:
        proxy.restore()
        thread.join(120)
        proxy.close()
        worker.close()

    stored = direct.requests.get(request.id)
    history = direct.requests.history(request.id)
    evaluations = [e for e in direct.evaluations.all() if e.request_id == request.id]
    direct.close()
    assert not isinstance(outcome[0], BaseException), outcome[0]
    assert retried(), "the store never met the outage"
    assert stored.status is Status.FINISHED, (stored, [h.reason for h in history])
    assert stored.attempts == 1  # no attempt used up
    assert outcome[0] is not None and outcome[0].status is Status.FINISHED
    assert len(evaluations) == 1 and evaluations[0].attempt == 1  # stored once
    assert [h.to_status for h in history] == [Status.PENDING, Status.RUNNING, Status.FINISHED]
