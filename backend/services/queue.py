"""The evaluation queue as workers and readers see it: ranked listing, claims with leases, heartbeats,
failures and their retries, and recovery of requests whose worker stopped heart-beating.

Interfaces and other services ask the queue by name (``get``, ``running``, ``release_unstarted``...); its
repository is its own. A run's completion is stored with its result, by the evaluation service."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from backend.domain import EvalRequest, RequestDetail, Status
from backend.errors import InvalidInput
from backend.storage.requests import RequestRepository
from backend.storage.votes import VoteRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed run goes back to the queue: only transient causes, and only so many times."""

    max_attempts: int

    def next_status(self, attempts: int, transient: bool) -> Status:
        return Status.PENDING if transient and attempts < self.max_attempts else Status.FAILED


@dataclass(frozen=True)
class Recovered:
    request_id: int
    worker_id: str | None
    status: Status


class QueueService:
    def __init__(
        self,
        requests: RequestRepository,
        votes: VoteRepository,
        clock: Callable[[], datetime],
        lease_seconds: float,
        policy: RetryPolicy,
        max_page_size: int,
    ) -> None:
        self._requests = requests
        self._votes = votes
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.policy = policy
        self.max_page_size = max_page_size

    def page(
        self, status: Status | None = Status.PENDING, limit: int = 100, offset: int = 0
    ) -> list[EvalRequest]:
        self._check_page(limit, offset)
        return self._requests.page(status, limit, offset)

    def _check_page(self, limit: int, offset: int) -> None:
        if not 1 <= limit <= self.max_page_size:
            raise InvalidInput(f"limit must be between 1 and {self.max_page_size}")
        if offset < 0:
            raise InvalidInput("offset must be 0 or more")

    def page_and_more(
        self, status: Status | None = Status.PENDING, limit: int = 100, offset: int = 0
    ) -> tuple[list[EvalRequest], bool]:
        """A page, and whether more rows follow it."""
        self._check_page(limit, offset)
        rows = self._requests.page(status, limit + 1, offset)
        return rows[:limit], len(rows) > limit

    def get(self, request_id: int) -> EvalRequest:
        """One request as it stands; RequestNotFound when there is none."""
        return self._requests.get(request_id)

    def detail(self, request_id: int) -> RequestDetail:
        request = self._requests.get(request_id)
        return RequestDetail(
            request=request,
            history=tuple(self._requests.history(request_id)),
            voters=tuple(v.user for v in self._votes.all_votes(request_id)),
        )

    def running(self, worker_prefix: str) -> list[EvalRequest]:
        """The RUNNING requests whose lease holder's id starts with ``worker_prefix`` (an executor's runs)."""
        return self._requests.running(worker_prefix)

    def claim(self, worker_id: str) -> EvalRequest | None:
        """The top-ranked pending request, now RUNNING under this worker's lease; None when none waits."""
        request = self._requests.claim(worker_id, self.clock())
        if request is not None:
            log.info(
                "request claimed",
                extra={"request_id": request.id, "model": request.model, "worker": worker_id},
            )
        return request

    def heartbeat(self, request_id: int, worker_id: str) -> None:
        self._requests.heartbeat(request_id, worker_id, self.clock())

    def started(self, request_id: int, worker_id: str, job_id: str) -> None:
        """Record the executor's job id of the run ``worker_id`` started; LeaseLost when the request moved
        on meanwhile (cancelled between the claim and the start)."""
        self._requests.set_job_id(request_id, worker_id, job_id)

    def release_unstarted(self, request_id: int, worker_id: str, reason: str) -> EvalRequest:
        """Hand back a request whose run could not be started: PENDING again, its attempt not counted (the
        failure was not the request's)."""
        return self._requests.release_unstarted(request_id, worker_id, reason, self.clock())

    def fail(
        self,
        request_id: int,
        worker_id: str,
        reason: str,
        *,
        transient: bool,
        log_path: str | None = None,
        log_tail: str | None = None,
    ) -> EvalRequest:
        """Record a failed run: back to the queue when the cause is transient and attempts remain. The
        reason is for everyone; the run's log (``log_path``, ``log_tail``) is kept apart from it."""
        current = self._requests.get(request_id)
        to = self.policy.next_status(current.attempts, transient)
        if to is Status.PENDING:
            reason = f"retry after a transient failure (attempt {current.attempts} of {self.policy.max_attempts}): {reason}"
        elif transient:
            reason = f"gave up after {current.attempts} attempts: {reason}"
        log.log(
            logging.ERROR if to is Status.FAILED else logging.WARNING,
            "run failed",
            extra={"request_id": request_id, "status": to, "reason": reason},
        )
        return self._requests.transition(
            request_id,
            to,
            actor=worker_id,
            reason=reason,
            now=self.clock(),
            worker_id=worker_id,
            log_path=log_path,
            log_tail=log_tail,
        )

    def recover_stalled(self) -> list[Recovered]:
        """Take back requests whose worker stopped heart-beating for longer than the lease.

        Safe to run from several processes at once: each release is guarded on the stale heartbeat.
        """
        now = self.clock()
        cutoff = now - self.lease
        recovered = []
        for request_id, worker_id, attempts, heartbeat_at in self._requests.stalled(cutoff):
            to = self.policy.next_status(attempts, transient=True)
            seen = heartbeat_at.isoformat(timespec="seconds") if heartbeat_at else "never"
            reason = f"worker stopped heart-beating (last heartbeat {seen})"
            if to is Status.FAILED:
                reason += f"; gave up after {attempts} attempts"
            if self._requests.release_stalled(request_id, worker_id, cutoff, to, reason, now):
                log.warning(
                    "lease expired", extra={"request_id": request_id, "worker": worker_id, "status": to}
                )
                recovered.append(Recovered(request_id, worker_id, to))
        return recovered
