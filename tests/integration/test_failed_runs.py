"""A failed run is recorded as three separate facts: the reason (for everyone, naming files but no server
paths), the log's path and the log's tail (kept apart, so each is shown to whom it belongs). On SQLite and
PostgreSQL, through a real worker and a real failing child; and stored rows of the old one-string form are
split by the migration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select, update

from backend.app import App
from backend.domain import Status
from backend.evaluation.runner import tail
from backend.settings import Settings
from backend.storage.database import Database
from backend.storage.schema import request_history, requests
from tests.commands import clean_env, leaderboard

from .conftest import new_request
from .test_migrations import old_request


def test_a_failed_run_keeps_its_reason_log_path_and_log_tail_apart(database_url: str, tmp_path: Path) -> None:
    server = tmp_path / "server-only-7c1e"  # a path no client may ever read
    settings = Settings(
        database_url=database_url,
        work_dir=server / "work",
        model_store=server / "models",
        # The run fails at once, quoting this path in its error: a cause that is not retried.
        config=str(server / "configs" / "missing-config.yaml"),
    )
    with App.open(settings) as app:
        request = app.requests.create(new_request(), app.clock(), None)
        failed = app.worker.work_once("worker-1")
        assert failed is not None and failed.id == request.id
        assert failed.status is Status.FAILED and failed.attempts == 1
        history = app.requests.history(request.id)

    log = server / "work" / "runs" / f"request-{request.id}" / "attempt-1" / "run.log"
    assert failed.failure_reason is not None
    assert "missing-config.yaml" in failed.failure_reason  # the file an author or admin can look for
    assert str(server) not in failed.failure_reason and "log" not in failed.failure_reason.lower()
    assert failed.failure_log_path == str(log) and log.is_file()
    assert failed.failure_log_tail == tail(log) and failed.failure_log_tail
    last = history[-1]
    assert (last.from_status, last.to_status) == (Status.RUNNING, Status.FAILED)
    assert last.reason == failed.failure_reason  # the history's reason is the reason alone
    assert (last.log_path, last.log_tail) == (failed.failure_log_path, failed.failure_log_tail)
    assert all(h.log_path is None and h.log_tail is None for h in history[:-1])

    # On the server's own terminal `leaderboard show` prints all three.
    env = clean_env(LEADERBOARD_DATABASE_URL=database_url)
    shown = leaderboard(env, "show", str(request.id), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"failure: {failed.failure_reason}" in shown.stdout
    assert f"log: {log}" in shown.stdout
    assert failed.failure_log_tail.splitlines()[-1] in shown.stdout


def test_a_retried_failure_keeps_its_log_in_the_history_and_any_other_move_clears_the_failure(
    app: App, clock
) -> None:
    request = app.requests.create(new_request(), clock(), None)
    app.queue.claim("w")
    retried = app.queue.fail(
        request.id, "w", "ran out of GPU memory", transient=True, log_path="/runs/a/run.log", log_tail="OOM"
    )
    assert retried.status is Status.PENDING
    assert (retried.failure_reason, retried.failure_log_path, retried.failure_log_tail) == (None, None, None)
    row = app.requests.history(request.id)[-1]
    assert row.reason == "retry after a transient failure (attempt 1 of 3): ran out of GPU memory"
    assert (row.log_path, row.log_tail) == ("/runs/a/run.log", "OOM")

    app.queue.claim("w")
    failed = app.queue.fail(
        request.id,
        "w",
        "the weights are corrupted",
        transient=False,
        log_path="/runs/b/run.log",
        log_tail="x",
    )
    assert (failed.failure_reason, failed.failure_log_path, failed.failure_log_tail) == (
        "the weights are corrupted",
        "/runs/b/run.log",
        "x",
    )
    requeued = app.admin.requeue(request.id, "admin")
    assert (requeued.failure_reason, requeued.failure_log_path, requeued.failure_log_tail) == (
        None,
        None,
        None,
    )


def test_the_migration_splits_failures_stored_as_one_string(database_url: str) -> None:
    db = Database(database_url)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    glued = "the weights are corrupted\n\nlog: /srv/work/runs/1/run.log\n--- last lines of the log ---\nboom\nbang"
    retried = "retry after a transient failure (attempt 1 of 3): OOM\n\nlog: /srv/r.log\n--- last lines of the log ---\n"
    try:
        db.upgrade("0006")
        request_id = old_request(db, now)
        with db.transaction() as conn:
            conn.execute(
                update(requests)
                .where(requests.c.id == request_id)
                .values(status="FAILED", failure_reason=glued)
            )
            for reason in ("submitted", retried, glued):
                conn.execute(
                    insert(request_history).values(
                        request_id=request_id, to_status="FAILED", actor="w", reason=reason, at=now
                    )
                )
        db.upgrade()
        with db.transaction() as conn:
            stored = conn.execute(select(requests)).mappings().one()
            rows = conn.execute(select(request_history).order_by(request_history.c.id)).mappings().all()
        assert (stored["failure_reason"], stored["failure_log_path"], stored["failure_log_tail"]) == (
            "the weights are corrupted",
            "/srv/work/runs/1/run.log",
            "boom\nbang",
        )
        assert [(r["reason"], r["log_path"], r["log_tail"]) for r in rows] == [
            ("submitted", None, None),
            ("retry after a transient failure (attempt 1 of 3): OOM", "/srv/r.log", None),
            ("the weights are corrupted", "/srv/work/runs/1/run.log", "boom\nbang"),
        ]
    finally:
        db.dispose()
