"""Evaluations of finished requests: version 1 stored together with the FINISHED transition, exactly once;
later versions added by re-scoring, the earlier ones kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, Select, and_, func, insert, select
from sqlalchemy.exc import IntegrityError

from backend.domain import Status
from backend.errors import AlreadyEvaluated, VersionConflict
from backend.storage.database import Database
from backend.storage.requests import RequestRepository
from backend.storage.schema import evaluations


@dataclass(frozen=True)
class Evaluation:
    request_id: int
    leaderboard: str
    config_hash: str
    scores: dict[str, float | None]
    stderrs: dict[str, float | None]
    results: dict[str, Any]
    provenance: dict[str, Any]
    artifacts: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    version: int = 1  # 1: the run's own scores; N+1: version N re-scored from its stored samples
    recorded_at: datetime | None = None  # when this version was stored (version 1: finished_at)
    rescored_from: int | None = None  # the id of the version this one re-scored
    id: int | None = None  # set once stored

    @property
    def recorded(self) -> datetime:
        return self.recorded_at or self.finished_at


def _values(evaluation: Evaluation) -> dict[str, Any]:
    values = {name: getattr(evaluation, name) for name in Evaluation.__dataclass_fields__ if name != "id"}
    values["recorded_at"] = evaluation.recorded
    return values


def _is_duplicate_version(exc: IntegrityError) -> bool:
    """The unique (request, leaderboard, version) constraint refused the row (PostgreSQL names it; SQLite
    names its columns)."""
    message = str(exc.orig)
    return "uq_evaluations_request_leaderboard_version" in message or "evaluations.version" in message


def _row_to_evaluation(row: RowMapping) -> Evaluation:
    values = {name: row[name] for name in Evaluation.__dataclass_fields__ if name != "results"}
    return Evaluation(**values, results=row.get("results", {}))


def _columns(with_results: bool) -> list[Any]:
    """The columns of an evaluation, the harness output among them only when asked (it is the bulk of a row)."""
    return [c for c in evaluations.c if with_results or c.name != "results"]


class EvaluationRepository:
    def __init__(self, db: Database, requests: RequestRepository) -> None:
        self.db = db
        self.requests = requests

    def store_and_finish(
        self, evaluation: Evaluation, now: datetime, more: Sequence[Evaluation] = ()
    ) -> None:
        """Store the evaluation (and ``more``: the same run's results on the deployment's other
        leaderboards) and move its request RUNNING -> FINISHED in one transaction.

        Raises LeaseLost (and stores nothing) when the worker no longer holds the request, and
        AlreadyEvaluated when an evaluation is already stored: a result is never recorded twice.
        """
        every = (evaluation, *more)
        if any(e.version != 1 for e in every):
            raise ValueError("store_and_finish stores a run's first version; re-scores use add_version")
        if any(e.request_id != evaluation.request_id for e in every):
            raise ValueError("store_and_finish stores the results of one request")
        boards = ", ".join(e.leaderboard for e in every)
        try:
            with self.db.transaction() as conn:
                self.requests.transition_in(
                    conn,
                    evaluation.request_id,
                    Status.FINISHED,
                    actor=evaluation.worker_id,
                    reason=f"evaluated on {boards} in {evaluation.duration_seconds:.0f} s",
                    now=now,
                    worker_id=evaluation.worker_id,
                )
                conn.execute(insert(evaluations), [_values(e) for e in every])
        except IntegrityError as exc:
            if _is_duplicate_version(exc):
                raise AlreadyEvaluated(
                    f"request {evaluation.request_id} already has an evaluation on {boards}"
                ) from exc
            raise

    def add_version(self, evaluation: Evaluation) -> Evaluation:
        """Store a new version of a stored result (``evaluation.version`` = the latest version + 1); the
        earlier versions are kept. Raises VersionConflict when that version was stored meanwhile."""
        try:
            with self.db.transaction() as conn:
                new_id = conn.execute(
                    insert(evaluations).values(_values(evaluation)).returning(evaluations.c.id)
                ).scalar_one()
        except IntegrityError as exc:
            if not _is_duplicate_version(exc):
                raise
            raise VersionConflict(
                f"version {evaluation.version} of request {evaluation.request_id}'s result on "
                f"{evaluation.leaderboard} was stored by another re-score meanwhile: run the re-score again"
            ) from exc
        stored = self._one(select(evaluations).where(evaluations.c.id == new_id))
        assert stored is not None
        return stored

    def get(self, request_id: int, leaderboard: str, version: int | None = None) -> Evaluation | None:
        """One version of a request's result (the latest when ``version`` is None)."""
        query = select(evaluations).where(
            evaluations.c.request_id == request_id, evaluations.c.leaderboard == leaderboard
        )
        if version is not None:
            query = query.where(evaluations.c.version == version)
        return self._one(query.order_by(evaluations.c.version.desc()).limit(1))

    def versions(self, request_id: int, leaderboard: str) -> list[Evaluation]:
        """Every version of a request's result, oldest first."""
        return self._many(
            select(evaluations)
            .where(evaluations.c.request_id == request_id, evaluations.c.leaderboard == leaderboard)
            .order_by(evaluations.c.version)
        )

    def latest(self, leaderboard: str | None = None, *, with_results: bool = True) -> list[Evaluation]:
        """The latest version of every stored result, by request (then leaderboard). ``with_results=False``
        leaves the harness output (``results``, ~100 kB a result) unread: those carry ``results={}``."""
        newest = select(
            evaluations.c.request_id,
            evaluations.c.leaderboard,
            func.max(evaluations.c.version).label("version"),
        ).group_by(evaluations.c.request_id, evaluations.c.leaderboard)
        if leaderboard is not None:
            newest = newest.where(evaluations.c.leaderboard == leaderboard)
        top = newest.subquery()
        query = (
            select(*_columns(with_results))
            .join(
                top,
                and_(
                    evaluations.c.request_id == top.c.request_id,
                    evaluations.c.leaderboard == top.c.leaderboard,
                    evaluations.c.version == top.c.version,
                ),
            )
            .order_by(evaluations.c.request_id, evaluations.c.leaderboard)
        )
        return self._many(query)

    def added_since(self, leaderboard: str, after_id: int, *, with_results: bool = True) -> list[Evaluation]:
        """Every version of ``leaderboard``'s results stored after the one whose id is ``after_id``, by
        request, then version (``with_results`` as in ``latest``)."""
        query = (
            select(*_columns(with_results))
            .where(evaluations.c.leaderboard == leaderboard, evaluations.c.id > after_id)
            .order_by(evaluations.c.request_id, evaluations.c.version)
        )
        return self._many(query)

    def stamp(self, leaderboard: str) -> tuple[int, int]:
        """(versions stored, the newest's id, 0 when none) of ``leaderboard``'s results, read from an index:
        results are stored once and never changed, so this changes whenever one is added, in any process."""
        query = select(func.count(), func.coalesce(func.max(evaluations.c.id), 0)).where(
            evaluations.c.leaderboard == leaderboard
        )
        with self.db.transaction() as conn:
            count, newest = conn.execute(query).one()
        return int(count), int(newest)

    def all(self, leaderboard: str | None = None) -> list[Evaluation]:
        """Every version of every stored result, in the order they were stored."""
        query = select(evaluations).order_by(evaluations.c.id)
        if leaderboard is not None:
            query = query.where(evaluations.c.leaderboard == leaderboard)
        return self._many(query)

    def _one(self, query: Select[Any]) -> Evaluation | None:
        with self.db.transaction() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _row_to_evaluation(row)

    def _many(self, query: Select[Any]) -> list[Evaluation]:
        with self.db.transaction() as conn:
            return [_row_to_evaluation(r) for r in conn.execute(query).mappings()]
