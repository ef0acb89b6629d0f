"""Evaluations of finished requests: stored together with the FINISHED transition, exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from backend.domain import Status
from backend.errors import LeaderboardError
from backend.storage.database import Database
from backend.storage.requests import RequestRepository
from backend.storage.schema import evaluations


class AlreadyEvaluated(LeaderboardError):
    """This request already has a stored evaluation for this leaderboard; it is never recorded twice."""

    http_status = 409
    code = "already_evaluated"


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


def _row_to_evaluation(row: RowMapping) -> Evaluation:
    return Evaluation(**{name: row[name] for name in Evaluation.__dataclass_fields__})


class EvaluationRepository:
    def __init__(self, db: Database, requests: RequestRepository) -> None:
        self.db = db
        self.requests = requests

    def store_and_finish(self, evaluation: Evaluation, now: datetime) -> None:
        """Store the evaluation and move its request RUNNING -> FINISHED in one transaction.

        Raises LeaseLost (and stores nothing) when the worker no longer holds the request, and
        AlreadyEvaluated when an evaluation is already stored: a result is never recorded twice.
        """
        values = {name: getattr(evaluation, name) for name in Evaluation.__dataclass_fields__}
        try:
            with self.db.transaction() as conn:
                self.requests.transition_in(
                    conn,
                    evaluation.request_id,
                    Status.FINISHED,
                    actor=evaluation.worker_id,
                    reason=f"evaluated on {evaluation.leaderboard} in {evaluation.duration_seconds:.0f} s",
                    now=now,
                    worker_id=evaluation.worker_id,
                )
                conn.execute(insert(evaluations).values(values))
        except IntegrityError as exc:
            if "uq_evaluations_request_leaderboard" in str(exc.orig) or "evaluations.request_id" in str(
                exc.orig
            ):
                raise AlreadyEvaluated(
                    f"request {evaluation.request_id} already has an evaluation on {evaluation.leaderboard}"
                ) from exc
            raise

    def get(self, request_id: int, leaderboard: str) -> Evaluation | None:
        with self.db.transaction() as conn:
            row = (
                conn.execute(
                    select(evaluations).where(
                        evaluations.c.request_id == request_id, evaluations.c.leaderboard == leaderboard
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _row_to_evaluation(row)

    def all(self, leaderboard: str | None = None) -> list[Evaluation]:
        query = select(evaluations).order_by(evaluations.c.id)
        if leaderboard is not None:
            query = query.where(evaluations.c.leaderboard == leaderboard)
        with self.db.transaction() as conn:
            return [_row_to_evaluation(r) for r in conn.execute(query).mappings()]
