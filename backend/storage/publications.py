"""What was published where, and the outbox: evaluations queued for a target and not yet delivered.

A publication row is written (published_at NULL) before anything is sent, and marked published only after
the target accepted every file, so a failed delivery leaves the row in the outbox for the next publish:
nothing is lost, and the unique (evaluation, target) constraint means nothing is published twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from backend.storage.database import Database
from backend.storage.evaluations import Evaluation
from backend.storage.schema import evaluations, publications


@dataclass(frozen=True)
class Publication:
    id: int
    evaluation_id: int
    target: str
    evaluation: Evaluation
    queued_at: datetime
    published_at: datetime | None  # None: in the outbox
    files: tuple[str, ...]


class PublicationRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue_new(self, target: str, leaderboard: str, now: datetime) -> int:
        """Queue every evaluation of `leaderboard` that `target` has no publication row for; returns how many."""
        not_queued = ~exists().where(
            and_(publications.c.evaluation_id == evaluations.c.id, publications.c.target == target)
        )
        source = select(
            evaluations.c.id,
            literal(target, publications.c.target.type),
            literal(now, publications.c.queued_at.type),
            literal([], publications.c.files.type),
        ).where(evaluations.c.leaderboard == leaderboard, not_queued)
        statement = insert(publications).from_select(
            ["evaluation_id", "target", "queued_at", "files"], source
        )
        try:
            with self.db.transaction() as conn:
                return conn.execute(statement).rowcount or 0
        except IntegrityError:  # a concurrent publisher queued them first: they are queued either way
            return 0

    def for_target(self, target: str, leaderboard: str) -> list[Publication]:
        """Every publication row of `target` for `leaderboard` (published and queued), by request, then
        result version.

        The harness output (``evaluation.results``, ~100 kB a result) is read only for the rows in the outbox,
        the ones whose results file is still to be written; published rows carry ``results={}``, so a
        publish that adds one model to thousands does not parse them all again.
        """
        light = [c for c in evaluations.c if c.name != "results"]
        joined = publications.join(evaluations, evaluations.c.id == publications.c.evaluation_id)
        where = (publications.c.target == target, evaluations.c.leaderboard == leaderboard)
        query = (
            select(publications, *light)
            .select_from(joined)
            .where(*where)
            .order_by(evaluations.c.request_id, evaluations.c.version)
        )
        outbox = (
            select(evaluations.c.id, evaluations.c.results)
            .select_from(joined)
            .where(*where, publications.c.published_at.is_(None))
        )
        with self.db.transaction() as conn:
            rows = conn.execute(query).mappings().all()
            results = {row.id: row.results for row in conn.execute(outbox)}
        found = []
        for row in rows:
            values = {
                name: row[evaluations.c[name]]
                for name in Evaluation.__dataclass_fields__
                if name != "results"
            }
            evaluation = Evaluation(**values, results=results.get(values["id"], {}))
            found.append(
                Publication(
                    id=row[publications.c.id],
                    evaluation_id=row[publications.c.evaluation_id],
                    target=target,
                    evaluation=evaluation,
                    queued_at=row[publications.c.queued_at],
                    published_at=row[publications.c.published_at],
                    files=tuple(row[publications.c.files] or ()),
                )
            )
        return found

    def outbox_count(self, target: str) -> int:
        query = select(func.count()).where(
            publications.c.target == target, publications.c.published_at.is_(None)
        )
        with self.db.transaction() as conn:
            return int(conn.execute(query).scalar_one())

    def mark_published(self, files: dict[int, list[str]], now: datetime) -> None:
        """Mark publication rows (id -> files written for it) delivered, in one transaction."""
        with self.db.transaction() as conn:
            for publication_id, paths in files.items():
                conn.execute(
                    update(publications)
                    .where(publications.c.id == publication_id, publications.c.published_at.is_(None))
                    .values(published_at=now, files=sorted(paths), last_error=None)
                )

    def mark_failed(self, ids: list[int], error: str) -> None:
        with self.db.transaction() as conn:
            if ids:
                conn.execute(
                    update(publications).where(publications.c.id.in_(ids)).values(last_error=error[:4000])
                )
