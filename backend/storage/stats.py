"""Figures for monitoring, read from the database at scrape time: queue depth by status and the
distribution of evaluation durations. Several API processes report the same numbers."""

from __future__ import annotations

from sqlalchemy import case, func, select

from backend.domain import Status
from backend.storage.database import Database
from backend.storage.schema import evaluations, requests

#: Upper bounds (seconds) of the evaluation-duration histogram: a minute to two days.
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0)


class StatsRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def requests_by_status(self) -> dict[Status, int]:
        """Every status, with 0 for those no request is in."""
        query = select(requests.c.status, func.count()).group_by(requests.c.status)
        with self.db.transaction() as conn:
            counts = {Status(status): int(n) for status, n in conn.execute(query)}
        return {status: counts.get(status, 0) for status in Status}

    def evaluation_durations(self) -> tuple[list[tuple[float, int]], int, float]:
        """(cumulative count per bucket upper bound, count, sum of seconds) over every run's duration
        (result version 1: re-scores run no model)."""
        cases = [
            func.sum(case((evaluations.c.duration_seconds <= bound, 1), else_=0))
            for bound in DURATION_BUCKETS
        ]
        query = select(
            func.count(), func.coalesce(func.sum(evaluations.c.duration_seconds), 0.0), *cases
        ).where(evaluations.c.version == 1)
        with self.db.transaction() as conn:
            row = conn.execute(query).one()
        count, total, *cumulative = row
        buckets = [(bound, int(n or 0)) for bound, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
        return buckets, int(count), float(total)
