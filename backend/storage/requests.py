"""The evaluation queue in the database: requests, their guarded status transitions, claims and leases.

Every status change is one guarded UPDATE (``WHERE id = :id AND status IN (...)``) that fails loudly when
no row matched, and writes its history row in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from backend.domain import (
    ACTIVE_STATUSES,
    TRANSITIONS,
    EvalRequest,
    HistoryEntry,
    ModelType,
    Precision,
    Status,
    WeightType,
    namespace_of,
)
from backend.errors import AlreadySubmitted, IllegalTransition, LeaseLost, RateLimitReached, RequestNotFound
from backend.storage.database import Database
from backend.storage.schema import evaluations, request_history, requests, votes

QUEUE_ORDER = (requests.c.votes.desc(), requests.c.submitted_at.asc(), requests.c.id.asc())


@dataclass(frozen=True)
class NewRequest:
    """A validated submission, ready to be stored."""

    model: str
    revision: str
    sha: str
    precision: Precision
    weight_type: WeightType
    model_type: ModelType
    base_model: str | None
    use_chat_template: bool
    params_b: float | None
    architectures: tuple[str, ...]
    license: str | None
    sender: str


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` submissions per namespace since ``since``; None where the namespace is exempt."""

    count: int
    since: datetime
    window_days: float


def row_to_request(row: RowMapping) -> EvalRequest:
    return EvalRequest(
        id=row["id"],
        model=row["model"],
        revision=row["revision"],
        sha=row["sha"],
        precision=Precision(row["precision"]),
        weight_type=WeightType(row["weight_type"]),
        model_type=ModelType(row["model_type"]),
        base_model=row["base_model"],
        use_chat_template=bool(row["use_chat_template"]),
        params_b=row["params_b"],
        architectures=tuple(row["architectures"] or ()),
        license=row["license"],
        sender=row["sender"],
        status=Status(row["status"]),
        votes=row["votes"],
        attempts=row["attempts"],
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        worker_id=row["worker_id"],
        heartbeat_at=row["heartbeat_at"],
        started_at=row["started_at"],
        job_id=row["job_id"],
        failure_reason=row["failure_reason"],
        failure_log_path=row["failure_log_path"],
        failure_log_tail=row["failure_log_tail"],
    )


def _failure(to: Status, reason: str | None, log_path: str | None, log_tail: str | None) -> dict[str, Any]:
    """The request's failure fields after a move to ``to``: set while FAILED, cleared by any other move."""
    if to is Status.FAILED:
        return {"failure_reason": reason, "failure_log_path": log_path, "failure_log_tail": log_tail}
    return {"failure_reason": None, "failure_log_path": None, "failure_log_tail": None}


def _is_active_duplicate(exc: IntegrityError) -> bool:
    return "ux_requests_active" in str(exc.orig) or "requests.model, requests.sha" in str(exc.orig)


class RequestRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- creation -----------------------------------------------------------------------------------
    def create(self, new: NewRequest, now: datetime, rate_limit: RateLimit | None) -> EvalRequest:
        """Store a request with its creation history and the submitter's own vote, in one transaction.

        The rate limit is checked inside that transaction (under a per-namespace lock on PostgreSQL, under
        the database write lock on SQLite) so concurrent submissions cannot exceed it.
        """
        namespace = namespace_of(new.model)
        try:
            with self.db.transaction() as conn:
                if rate_limit is not None:
                    self._check_rate_limit(conn, namespace, rate_limit)
                values = {
                    "model": new.model,
                    "namespace": namespace,
                    "revision": new.revision,
                    "sha": new.sha,
                    "precision": new.precision.value,
                    "weight_type": new.weight_type.value,
                    "model_type": new.model_type.value,
                    "base_model": new.base_model,
                    "use_chat_template": new.use_chat_template,
                    "params_b": new.params_b,
                    "architectures": list(new.architectures),
                    "license": new.license,
                    "sender": new.sender,
                    "status": Status.PENDING.value,
                    "votes": 1,
                    "attempts": 0,
                    "submitted_at": now,
                    "updated_at": now,
                }
                request_id = conn.execute(
                    insert(requests).values(values).returning(requests.c.id)
                ).scalar_one()
                self._record(conn, request_id, None, Status.PENDING, new.sender, "submitted", now)
                conn.execute(insert(votes).values(request_id=request_id, voter=new.sender, created_at=now))
        except IntegrityError as exc:
            if not _is_active_duplicate(exc):
                raise
            raise self._already_submitted(new.model, new.sha, new.precision) from exc
        return self.get(request_id)

    def _already_submitted(self, model: str, sha: str, precision: Precision) -> AlreadySubmitted:
        """The domain error for a violation of ux_requests_active, naming the request that holds the slot."""
        existing = self.find_active(model, sha, precision)
        return AlreadySubmitted(
            model,
            sha,
            precision.value,
            existing.id if existing else None,
            existing.status.value if existing else None,
        )

    def _check_rate_limit(self, conn: Connection, namespace: str, limit: RateLimit) -> None:
        if self.db.is_postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:ns))"), {"ns": "submit:" + namespace})
        recent = conn.execute(
            select(func.count(), func.min(requests.c.submitted_at)).where(
                requests.c.namespace == namespace, requests.c.submitted_at > limit.since
            )
        ).one()
        count, oldest = recent
        if count >= limit.count:
            frees_at = oldest + timedelta(days=limit.window_days)
            raise RateLimitReached(namespace, count, limit.count, limit.window_days, frees_at)

    # -- reads --------------------------------------------------------------------------------------
    def get(self, request_id: int) -> EvalRequest:
        with self.db.transaction() as conn:
            row = conn.execute(select(requests).where(requests.c.id == request_id)).mappings().first()
        if row is None:
            raise RequestNotFound(f"no request {request_id}: list requests with `leaderboard queue`")
        return row_to_request(row)

    def find_active(self, model: str, sha: str, precision: Precision) -> EvalRequest | None:
        with self.db.transaction() as conn:
            row = (
                conn.execute(
                    select(requests).where(
                        requests.c.model == model,
                        requests.c.sha == sha,
                        requests.c.precision == precision.value,
                        requests.c.status.in_([s.value for s in ACTIVE_STATUSES]),
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else row_to_request(row)

    def check_rate_limit(self, namespace: str, limit: RateLimit) -> None:
        """Raise RateLimitReached when ``namespace`` has used up its window."""
        with self.db.transaction() as conn:
            self._check_rate_limit(conn, namespace, limit)

    def page(self, status: Status | None = None, limit: int = 100, offset: int = 0) -> list[EvalRequest]:
        """Pending requests in queue order (votes desc, then submission time); others newest first."""
        query = select(requests)
        if status is not None:
            query = query.where(requests.c.status == status.value)
        if status is Status.PENDING:
            query = query.order_by(*QUEUE_ORDER)
        else:
            query = query.order_by(requests.c.updated_at.desc(), requests.c.id.desc())
        with self.db.transaction() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
        return [row_to_request(r) for r in rows]

    def all(self) -> list[EvalRequest]:
        with self.db.transaction() as conn:
            rows = conn.execute(select(requests).order_by(requests.c.id)).mappings().all()
        return [row_to_request(r) for r in rows]

    def evaluated(self, leaderboard: str, after_id: int = 0) -> list[EvalRequest]:
        """The requests with a result on ``leaderboard`` whose id is above ``after_id`` (every one by default),
        by id."""
        results = select(evaluations.c.request_id).where(
            evaluations.c.leaderboard == leaderboard, evaluations.c.id > after_id
        )
        with self.db.transaction() as conn:
            rows = (
                conn.execute(select(requests).where(requests.c.id.in_(results)).order_by(requests.c.id))
                .mappings()
                .all()
            )
        return [row_to_request(r) for r in rows]

    def history(self, request_id: int) -> list[HistoryEntry]:
        with self.db.transaction() as conn:
            rows = (
                conn.execute(
                    select(request_history)
                    .where(request_history.c.request_id == request_id)
                    .order_by(request_history.c.id)
                )
                .mappings()
                .all()
            )
        return [
            HistoryEntry(
                request_id=r["request_id"],
                from_status=Status(r["from_status"]) if r["from_status"] else None,
                to_status=Status(r["to_status"]),
                actor=r["actor"],
                reason=r["reason"],
                at=r["at"],
                log_path=r["log_path"],
                log_tail=r["log_tail"],
            )
            for r in rows
        ]

    # -- transitions --------------------------------------------------------------------------------
    def transition(
        self,
        request_id: int,
        to: Status,
        *,
        actor: str,
        reason: str | None,
        now: datetime,
        allowed_from: frozenset[Status] | None = None,
        worker_id: str | None = None,
        values: dict[str, Any] | None = None,
        log_path: str | None = None,
        log_tail: str | None = None,
    ) -> EvalRequest:
        """Move a request to ``to`` when its status allows it (and, given ``worker_id``, when that worker
        holds its lease); raise IllegalTransition, LeaseLost or RequestNotFound otherwise. ``log_path`` and
        ``log_tail``: the log of the failed run that causes the move, kept beside ``reason``."""
        try:
            with self.db.transaction() as conn:
                self.transition_in(
                    conn,
                    request_id,
                    to,
                    actor=actor,
                    reason=reason,
                    now=now,
                    allowed_from=allowed_from,
                    worker_id=worker_id,
                    values=values,
                    log_path=log_path,
                    log_tail=log_tail,
                )
        except IntegrityError as exc:
            if not _is_active_duplicate(exc):
                raise
            req = self.get(request_id)
            raise self._already_submitted(req.model, req.sha, req.precision) from exc
        return self.get(request_id)

    def transition_in(
        self,
        conn: Connection,
        request_id: int,
        to: Status,
        *,
        actor: str,
        reason: str | None,
        now: datetime,
        allowed_from: frozenset[Status] | None = None,
        worker_id: str | None = None,
        values: dict[str, Any] | None = None,
        log_path: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        """The guarded transition inside a caller's transaction (so it can commit with other writes). A
        move to FAILED records ``reason`` and the log as the request's failure; any other move clears it."""
        allowed = allowed_from if allowed_from is not None else TRANSITIONS[to]
        if not allowed <= TRANSITIONS[to]:
            raise IllegalTransition(f"{sorted(allowed - TRANSITIONS[to])} -> {to} is not a transition")
        current = conn.execute(
            select(requests.c.status, requests.c.worker_id)
            .where(requests.c.id == request_id)
            .with_for_update()
        ).first()
        if current is None:
            raise RequestNotFound(f"no request {request_id}: list requests with `leaderboard queue`")
        from_status = Status(current.status)
        if worker_id is not None and (from_status is not Status.RUNNING or current.worker_id != worker_id):
            raise LeaseLost(
                f"request {request_id} is {from_status} and held by {current.worker_id or 'no worker'}, "
                f"not by {worker_id}: stop working on it"
            )
        if from_status not in allowed:
            raise IllegalTransition(
                f"request {request_id} is {from_status}; it can become {to} only from {' or '.join(sorted(allowed))}"
            )
        guard = [requests.c.id == request_id, requests.c.status == from_status.value]
        if worker_id is not None:
            guard.append(requests.c.worker_id == worker_id)
        changes = {
            "status": to.value,
            "updated_at": now,
            **_failure(to, reason, log_path, log_tail),
            **(values or {}),
        }
        if to is not Status.RUNNING:
            changes.setdefault("worker_id", None)
            changes.setdefault("heartbeat_at", None)
        result = conn.execute(update(requests).where(*guard).values(changes))
        if result.rowcount != 1:  # pragma: no cover - the row is locked; this would be a bug
            raise IllegalTransition(f"request {request_id} changed while being moved to {to}")
        self._record(conn, request_id, from_status, to, actor, reason, now, log_path, log_tail)

    def claim(self, worker_id: str, now: datetime) -> EvalRequest | None:
        """Atomically take the top-ranked pending request and give ``worker_id`` its lease.

        One statement: on PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED, so
        concurrent workers take different rows; on SQLite the write transaction (BEGIN IMMEDIATE) makes it
        atomic. The candidate is found through ix_requests_queue.
        """
        candidate = (
            select(requests.c.id)
            .where(requests.c.status == Status.PENDING.value)
            .order_by(*QUEUE_ORDER)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self.db.transaction() as conn:
            row = (
                conn.execute(
                    update(requests)
                    .where(requests.c.id == candidate, requests.c.status == Status.PENDING.value)
                    .values(
                        status=Status.RUNNING.value,
                        worker_id=worker_id,
                        heartbeat_at=now,
                        started_at=now,
                        updated_at=now,
                        attempts=requests.c.attempts + 1,
                        job_id=None,
                        **_failure(Status.RUNNING, None, None, None),
                    )
                    .returning(*requests.c)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            self._record(
                conn,
                row["id"],
                Status.PENDING,
                Status.RUNNING,
                worker_id,
                f"claimed (attempt {row['attempts']})",
                now,
            )
        return row_to_request(row)

    def heartbeat(self, request_id: int, worker_id: str, now: datetime) -> None:
        """Renew the lease; raise LeaseLost when this worker no longer holds the request."""
        with self.db.transaction() as conn:
            result = conn.execute(
                update(requests)
                .where(
                    requests.c.id == request_id,
                    requests.c.worker_id == worker_id,
                    requests.c.status == Status.RUNNING.value,
                )
                .values(heartbeat_at=now)
            )
        if result.rowcount != 1:
            raise LeaseLost(
                f"worker {worker_id} no longer holds request {request_id} (lease expired or request cancelled)"
            )

    def release_unstarted(self, request_id: int, worker_id: str, reason: str, now: datetime) -> EvalRequest:
        """RUNNING -> PENDING under ``worker_id``'s lease, taking back the attempt its claim counted: the run
        never started. LeaseLost when the worker no longer holds the request."""
        return self.transition(
            request_id,
            Status.PENDING,
            actor=worker_id,
            reason=reason,
            now=now,
            worker_id=worker_id,
            values={"attempts": requests.c.attempts - 1},
        )

    def set_job_id(self, request_id: int, worker_id: str, job_id: str) -> None:
        with self.db.transaction() as conn:
            result = conn.execute(
                update(requests)
                .where(requests.c.id == request_id, requests.c.worker_id == worker_id)
                .values(job_id=job_id)
            )
        if result.rowcount != 1:
            raise LeaseLost(f"worker {worker_id} no longer holds request {request_id}")

    def running(self, worker_prefix: str) -> list[EvalRequest]:
        """RUNNING requests whose lease holder's id starts with ``worker_prefix`` (an executor's runs)."""
        with self.db.transaction() as conn:
            rows = (
                conn.execute(
                    select(requests)
                    .where(
                        requests.c.status == Status.RUNNING.value,
                        requests.c.worker_id.startswith(worker_prefix, autoescape=True),
                    )
                    .order_by(requests.c.id)
                )
                .mappings()
                .all()
            )
        return [row_to_request(r) for r in rows]

    def stalled(self, cutoff: datetime) -> Sequence[tuple[int, str | None, int, datetime | None]]:
        """Running requests whose last heartbeat is older than ``cutoff``: (id, worker, attempts, heartbeat)."""
        with self.db.transaction() as conn:
            return [
                (r.id, r.worker_id, r.attempts, r.heartbeat_at)
                for r in conn.execute(
                    select(requests.c.id, requests.c.worker_id, requests.c.attempts, requests.c.heartbeat_at)
                    .where(requests.c.status == Status.RUNNING.value, requests.c.heartbeat_at < cutoff)
                    .order_by(requests.c.id)
                )
            ]

    def release_stalled(
        self, request_id: int, worker_id: str | None, cutoff: datetime, to: Status, reason: str, now: datetime
    ) -> bool:
        """Take a request away from a worker that stopped heart-beating; False when it heart-beat (or was
        released by another recoverer) meanwhile."""
        with self.db.transaction() as conn:
            result = conn.execute(
                update(requests)
                .where(
                    requests.c.id == request_id,
                    requests.c.status == Status.RUNNING.value,
                    requests.c.heartbeat_at < cutoff,
                )
                .values(
                    status=to.value,
                    worker_id=None,
                    heartbeat_at=None,
                    updated_at=now,
                    **_failure(to, reason, None, None),
                )
            )
            if result.rowcount != 1:
                return False
            self._record(
                conn, request_id, Status.RUNNING, to, "recovery", f"{reason} (worker {worker_id})", now
            )
        return True

    @staticmethod
    def _record(
        conn: Connection,
        request_id: int,
        from_status: Status | None,
        to: Status,
        actor: str,
        reason: str | None,
        now: datetime,
        log_path: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        conn.execute(
            insert(request_history).values(
                request_id=request_id,
                from_status=from_status.value if from_status else None,
                to_status=to.value,
                actor=actor,
                reason=reason,
                at=now,
                log_path=log_path,
                log_tail=log_tail,
            )
        )

    # -- import -------------------------------------------------------------------------------------
    def insert_imported(self, values: dict[str, Any], actor: str, now: datetime) -> int | None:
        """Insert a request read from a mirror as it is (status, votes and times kept); None when it would
        duplicate an active request."""
        values = {**values, "namespace": namespace_of(values["model"])}
        try:
            with self.db.transaction() as conn:
                request_id = conn.execute(
                    insert(requests).values(values).returning(requests.c.id)
                ).scalar_one()
                self._record(
                    conn,
                    request_id,
                    None,
                    Status(values["status"]),
                    actor,
                    "imported from a requests export",
                    now,
                )
        except IntegrityError as exc:
            if _is_active_duplicate(exc):
                return None
            raise
        return request_id

    def find_imported(self, model: str, sha: str, precision: str, submitted_at: datetime) -> int | None:
        with self.db.transaction() as conn:
            return conn.execute(
                select(requests.c.id).where(
                    requests.c.model == model,
                    requests.c.sha == sha,
                    requests.c.precision == precision,
                    requests.c.submitted_at == submitted_at,
                )
            ).scalar()

    def all_for_model(self, model: str, sha: str) -> list[EvalRequest]:
        with self.db.transaction() as conn:
            rows = (
                conn.execute(
                    select(requests)
                    .where(requests.c.model == model, requests.c.sha == sha)
                    .order_by(requests.c.id)
                )
                .mappings()
                .all()
            )
        return [row_to_request(r) for r in rows]
