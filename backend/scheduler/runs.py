"""Runs through an executor: dispatch claimed requests, keep their leases, collect them when they end.

A run holds its request's lease under the worker id ``<executor>:<scheduler>:<token>``, and its job carries
the request and the token in its name. The scheduler that started a local run is the only one that sees it;
a Slurm job is seen by every scheduler, so any of them heart-beats and collects it. Each step is safe on
several schedulers at once: claims are atomic, a collected result is stored with a transition guarded on
the run's lease (and unique per request), a failure is recorded under the same guard, and a job whose
request no longer runs under its token (cancelled, recovered, re-dispatched) is stopped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from backend.domain import EvalRequest
from backend.errors import ExecutorError, IllegalTransition, LeaderboardError, LeaseLost
from backend.evaluation.runner import RunSpec
from backend.executors.interface import Executor, JobState, JobStatus, lease_token, parse_job_name
from backend.services.evaluate import EvaluationService

log = logging.getLogger(__name__)


class RunCoordinator:
    def __init__(self, worker: EvaluationService, executor: Executor, scheduler_id: str) -> None:
        self.worker = worker
        self.queue = worker.queue
        self.executor = executor
        self.scheduler_id = scheduler_id
        self.own_prefix = f"{executor.kind}:{scheduler_id}:"
        #: the runs this scheduler looks after: every Slurm job, or its own local runs
        self.watched_prefix = f"{executor.kind}:" if executor.shared else self.own_prefix
        self._lock = threading.Lock()  # dispatch, heartbeat and collect of one scheduler never overlap

    # -- dispatch -----------------------------------------------------------------------------------
    def dispatch(self) -> list[EvalRequest]:
        """Claim and start requests while the executor has free slots; returns those started."""
        started: list[EvalRequest] = []
        with self._lock:
            while self.executor.free_slots(self.queue.running(self.watched_prefix)) > 0:
                request = self.queue.claim(self.own_prefix + uuid.uuid4().hex[:12])
                if request is None:
                    break
                if not self._start(request):
                    break
                started.append(request)
        return started

    def _start(self, request: EvalRequest) -> bool:
        assert request.worker_id is not None
        spec = self.worker.spec(request)
        attempt = Path(spec.output_dir)
        Path(spec.cache_path).parent.mkdir(parents=True, exist_ok=True)
        env = self.worker.runner.child_environment(spec, attempt)
        try:
            job = self.executor.submit(request, spec, attempt, env)
        except ExecutorError as exc:  # not the request's fault: back to the queue, the attempt not counted
            log.warning("run not started", extra={"request_id": request.id, "error": exc.message})
            self.queue.release_unstarted(
                request.id,
                request.worker_id,
                f"the {self.executor.kind} executor could not start the run: {exc.message}",
            )
            return False
        try:
            self.queue.started(request.id, request.worker_id, job.job_id)
        except LeaseLost:  # cancelled between the claim and the start
            self.executor.cancel(job.job_id)
            self.executor.release(job.job_id)
            return True
        log.info(
            "run dispatched",
            extra={
                "request_id": request.id,
                "model": request.model,
                "job_id": job.job_id,
                "worker": request.worker_id,
            },
        )
        return True

    # -- heartbeat and recovery ---------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Renew the lease of every watched run whose job is alive, take back stalled requests, and stop
        jobs whose request moved on."""
        with self._lock:
            running = [r for r in self.queue.running(self.watched_prefix) if r.job_id]
            statuses = self._statuses(running)
            for request in running:
                assert request.job_id is not None and request.worker_id is not None
                if statuses[request.job_id].alive:
                    with contextlib.suppress(LeaseLost):  # cancelled or recovered meanwhile: stopped below
                        self.queue.heartbeat(request.id, request.worker_id)
            for recovered in self.queue.recover_stalled():
                log.warning("stalled run recovered", extra={"request_id": recovered.request_id})
            self._stop_orphans()

    def _stop_orphans(self) -> None:
        jobs = self.executor.live_jobs()
        if not jobs:
            return
        holders = {r.id: lease_token(r.worker_id) for r in self.queue.running(f"{self.executor.kind}:")}
        for job in jobs:
            parsed = parse_job_name(job.name, self.executor.deployment)
            if parsed is None or holders.get(parsed[0]) == parsed[1]:
                continue
            log.warning(
                "stopping a job whose request moved on", extra={"request_id": parsed[0], "job_id": job.job_id}
            )
            self.executor.cancel(job.job_id)
            if not self.executor.shared:
                self.executor.release(job.job_id)

    # -- collection ---------------------------------------------------------------------------------
    def collect(self) -> list[EvalRequest]:
        """Record every watched run whose job has ended; returns the requests as they now stand."""
        collected: list[EvalRequest] = []
        with self._lock:
            running = [r for r in self.queue.running(self.watched_prefix) if r.job_id]
            statuses = self._statuses(running)
            for request in running:
                assert request.job_id is not None
                status = statuses[request.job_id]
                if status.state is not JobState.ENDED:
                    continue
                try:
                    outcome = self._record(request, status)
                except LeaderboardError as exc:  # e.g. the database went away: collected next round
                    log.warning("run not collected", extra={"request_id": request.id, "error": exc.message})
                    continue
                self.executor.release(request.job_id)
                if outcome is not None:
                    collected.append(outcome)
        return collected

    def _record(self, request: EvalRequest, status: JobStatus) -> EvalRequest | None:
        assert request.worker_id is not None
        attempt = self.worker.attempt_dir(request)
        try:
            spec = RunSpec.from_json((attempt / "spec.json").read_text())
        except (
            OSError,
            ValueError,
        ) as exc:  # not on this scheduler's disk (LEADERBOARD_WORK_DIR not shared?)
            log.warning(
                "run files unreadable",
                extra={"request_id": request.id, "attempt": str(attempt), "error": str(exc)},
            )
            reason = (
                "the run's files cannot be read by the scheduler that collected it; an admin should check "
            )
            reason += "that LEADERBOARD_WORK_DIR is shared by every node"
            try:
                return self.queue.fail(
                    request.id,
                    request.worker_id,
                    reason,
                    transient=True,
                    log_path=str(attempt / "run.log"),
                    log_tail=f"{type(exc).__name__}: {exc}",
                )
            except (LeaseLost, IllegalTransition):
                return None
        result = self.worker.runner.result(
            attempt,
            status.returncode,
            _started_at(attempt),
            datetime.now(UTC),
            timed_out=status.timed_out,
            failure=status.failure,
        )
        try:
            outcome = self.worker.finish_run(request, spec, result, request.worker_id)
        except (LeaseLost, IllegalTransition) as exc:  # another scheduler recorded it first
            log.info("run already collected", extra={"request_id": request.id, "reason": exc.message})
            return None
        log.info(
            "run collected",
            extra={
                "request_id": request.id,
                "job_id": request.job_id,
                "status": outcome.status,
                "detail": status.detail,
            },
        )
        return outcome

    def _statuses(self, running: list[EvalRequest]) -> dict[str, JobStatus]:
        return self.executor.status({r.job_id: self.worker.attempt_dir(r) for r in running if r.job_id})

    # -- shutdown -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the runs that cannot outlive this process and hand their requests back to the queue; a
        cluster's jobs keep running for the next scheduler to collect."""
        with self._lock:
            stopped = set(self.executor.shutdown())
            for request in self.queue.running(self.own_prefix):
                if request.job_id in stopped and request.worker_id is not None:
                    try:
                        self.queue.fail(
                            request.id,
                            request.worker_id,
                            "the scheduler was stopped during the run",
                            transient=True,
                        )
                    except (LeaseLost, IllegalTransition):
                        continue


def _started_at(attempt: Path) -> datetime:
    """When the run started: the job's own record (Slurm), else when its spec was written."""
    with contextlib.suppress(OSError, ValueError):
        return datetime.fromtimestamp(int((attempt / "job-started").read_text().strip()), UTC)
    try:
        return datetime.fromtimestamp((attempt / "spec.json").stat().st_mtime, UTC)
    except OSError:
        return datetime.now(UTC)
