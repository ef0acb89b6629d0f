"""The scheduler service: APScheduler jobs over the services, in `leaderboard scheduler` or inside
`leaderboard serve`. Several schedulers may run against one PostgreSQL database: every job is safe to run
on several of them at once (see runs.py; publish, requests_export and metadata take a job lock)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from backend.app import App
from backend.errors import LeaderboardError
from backend.executors.factory import executor_from_settings
from backend.executors.interface import Executor
from backend.scheduler.locks import job_lock
from backend.scheduler.metadata import MetadataRefresher
from backend.scheduler.runs import RunCoordinator

log = logging.getLogger(__name__)

#: every job, in the order they first run
JOBS = ("collect", "heartbeat", "dispatch", "publish", "metadata", "requests_export")


def default_scheduler_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SchedulerService:
    """The scheduled jobs of one scheduler process. start() returns at once; shutdown() waits for running
    jobs, then stops the local runs and hands their requests back (Slurm jobs keep running)."""

    def __init__(
        self,
        app: App,
        executor: Executor | None = None,
        scheduler_id: str | None = None,
        jobs: tuple[str, ...] = JOBS,
    ) -> None:
        unknown = set(jobs) - set(JOBS)
        if unknown:
            raise ValueError(f"unknown scheduler jobs: {sorted(unknown)}")
        self.app = app
        app.judged_configs  # noqa: B018 (a bad LEADERBOARD_JUDGED is refused before any request is dispatched)
        settings = app.settings
        self.scheduler_id = scheduler_id or default_scheduler_id()
        self.executor = executor or executor_from_settings(settings, app.worker.runner)
        self.runs = RunCoordinator(app.worker, self.executor, self.scheduler_id)
        self.refresher = MetadataRefresher(
            app.model_source,
            app.model_metadata,
            app.clock,
            max_age_seconds=settings.scheduler_metadata_seconds / 2,
        )
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        intervals: dict[str, float] = {
            "collect": settings.scheduler_poll_seconds,
            "heartbeat": settings.heartbeat_seconds,
            "dispatch": settings.scheduler_poll_seconds,
            "publish": settings.scheduler_publish_seconds,
            "metadata": settings.scheduler_metadata_seconds,
            "requests_export": settings.scheduler_requests_export_seconds,
        }
        if settings.requests_export_dir is None:
            jobs = tuple(j for j in jobs if j != "requests_export")
        self.jobs = jobs
        now = datetime.now(UTC)
        for name in jobs:
            self.scheduler.add_job(
                self._guarded(name, getattr(self, name)),
                "interval",
                seconds=intervals[name],
                id=name,
                name=name,
                next_run_time=now,
            )

    def start(self) -> None:
        self.scheduler.start()
        log.info(
            "scheduler started",
            extra={
                "scheduler": self.scheduler_id,
                "executor": self.executor.kind,
                "jobs": ",".join(self.jobs),
            },
        )

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.runs.shutdown()
        log.info("scheduler stopped", extra={"scheduler": self.scheduler_id})

    # -- the jobs -----------------------------------------------------------------------------------
    def dispatch(self) -> None:
        self.runs.dispatch()

    def heartbeat(self) -> None:
        self.runs.heartbeat()

    def collect(self) -> None:
        self.runs.collect()

    def publish(self) -> None:
        with job_lock(self.app.db, "publish") as held:
            if held:
                report = self.app.publish_results()
                if report.published:
                    log.info("published", extra={"evaluations": report.published, "target": report.target})

    def metadata(self) -> None:
        with job_lock(self.app.db, "metadata") as held:
            if held:
                self.refresher.refresh()

    def requests_export(self) -> None:
        folder = self.app.settings.requests_export_dir
        if folder is None:
            return
        with job_lock(self.app.db, "requests_export") as held:
            if held:
                self.app.requests_export.export(folder)

    def _guarded(self, name: str, job: Callable[[], None]) -> Callable[[], None]:
        """A job whose expected failures (database restarting, cluster unreachable, Hub down) are logged and
        retried at its next run, never fatal to the scheduler."""

        def run() -> None:
            try:
                job()
            except LeaderboardError as exc:
                log.warning("scheduler job failed", extra={"job": name, "error": exc.message})
            except Exception:
                log.exception("scheduler job crashed", extra={"job": name})

        return run

    def run_once(self) -> None:
        """Run every job once, in order (`leaderboard scheduler --once`); local runs cannot outlive this
        process, so those it started are then heart-beaten and collected until they end."""
        for name in self.jobs:
            self._guarded(name, getattr(self, name))()
        pause = min(self.app.settings.scheduler_poll_seconds, self.app.settings.heartbeat_seconds)
        while not self.executor.shared and self.executor.live_jobs():
            time.sleep(pause)
            self._guarded("heartbeat", self.heartbeat)()
            self._guarded("collect", self.collect)()


def build_scheduler(app: App) -> SchedulerService:
    """The scheduler for `leaderboard serve` and `leaderboard scheduler`: every job, the configured executor."""
    return SchedulerService(app)
