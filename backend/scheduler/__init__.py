"""The scheduler: APScheduler jobs that dispatch requests to an executor, keep their leases, collect and
publish results, refresh Hub metadata and mirror the queue. `build_scheduler(app)` is its entry point."""

from backend.scheduler.service import SchedulerService, build_scheduler

__all__ = ["SchedulerService", "build_scheduler"]
