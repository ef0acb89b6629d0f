"""`leaderboard scheduler`: the scheduler alone (several may run against one PostgreSQL database)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from backend.cli.common import console, handle_errors, open_app


@click.command()
@click.option(
    "--scheduler-id", default=None, help="Name of this scheduler in leases and logs (default host-pid)."
)
@click.option(
    "--once",
    is_flag=True,
    help="Run every job once (dispatch, collect, ...), wait for the local runs it started, then exit.",
)
@handle_errors
def scheduler(scheduler_id: str | None, once: bool) -> None:
    """Dispatch requests to the executor (LEADERBOARD_EXECUTOR), keep their leases, collect and publish
    results, refresh Hub metadata and mirror the queue, on a schedule; Ctrl-C or SIGTERM stops it."""
    from backend.scheduler.service import SchedulerService

    app = open_app()
    service = SchedulerService(app, scheduler_id=scheduler_id)
    if once:
        service.run_once()
        service.shutdown()
        return
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    service.start()
    console.print(
        f"scheduler {service.scheduler_id}: {service.executor.kind} executor, jobs {', '.join(service.jobs)} "
        "(Ctrl-C stops)"
    )
    stop.wait()
    service.shutdown()
    console.print("stopped")
