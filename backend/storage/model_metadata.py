"""The Hub metadata of submitted models, as last refreshed: likes, availability, license."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from backend.domain import Status
from backend.storage.database import Database
from backend.storage.schema import model_metadata, requests


@dataclass(frozen=True)
class ModelMetadata:
    model: str
    likes: int
    available: bool
    license: str | None
    refreshed_at: datetime


class ModelMetadataRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def due(self, statuses: frozenset[Status], before: datetime, limit: int) -> list[str]:
        """Models with a request in ``statuses`` whose metadata was never refreshed, or not since
        ``before``: never-refreshed first, then the longest-waiting."""
        refreshed = (
            select(model_metadata.c.refreshed_at)
            .where(model_metadata.c.model == requests.c.model)
            .scalar_subquery()
        )
        query = (
            select(requests.c.model, refreshed.label("refreshed_at"))
            .where(requests.c.status.in_([s.value for s in statuses]))
            .group_by(requests.c.model)
        )
        with self.db.transaction() as conn:
            rows = conn.execute(query).all()
        due = [
            (r.refreshed_at, r.model)
            for r in rows
            if r.refreshed_at is None or _aware(r.refreshed_at) < before
        ]
        due.sort(key=lambda item: (item[0] is not None, item[0] or before, item[1]))
        return [model for _, model in due[:limit]]

    def save(self, entry: ModelMetadata) -> None:
        """Insert or replace a model's metadata (the last refresh wins; refreshes are idempotent). Its count
        of changes goes up when the likes, availability or license differ from what was stored."""
        m = model_metadata.c
        changed = or_(
            m.likes != entry.likes,
            m.available != entry.available,
            m.license.is_distinct_from(entry.license),
        )
        replace = (
            update(model_metadata)
            .where(m.model == entry.model)
            .values(
                likes=entry.likes,
                available=entry.available,
                license=entry.license,
                refreshed_at=entry.refreshed_at,
                changes=case((changed, m.changes + 1), else_=m.changes),
            )
        )
        with self.db.transaction() as conn:
            if conn.execute(replace).rowcount:
                return
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    model_metadata.insert().values(
                        model=entry.model,
                        likes=entry.likes,
                        available=entry.available,
                        license=entry.license,
                        refreshed_at=entry.refreshed_at,
                        changes=1,
                    )
                )
        except IntegrityError:  # another scheduler inserted it meanwhile: update instead
            with self.db.transaction() as conn:
                conn.execute(replace)

    def stamp(self) -> tuple[int, int]:
        """(models, changes of them all): different whenever a model's shown metadata was added or changed,
        in any process (rows are never deleted), for the price of one aggregate."""
        query = select(func.count(), func.coalesce(func.sum(model_metadata.c.changes), 0))
        with self.db.transaction() as conn:
            count, changes = conn.execute(query).one()
        return int(count), int(changes)

    def all(self) -> dict[str, ModelMetadata]:
        """Every model's last refreshed metadata, by model id."""
        with self.db.transaction() as conn:
            rows = conn.execute(select(model_metadata)).mappings().all()
        return {r["model"]: _row(r) for r in rows}

    def get(self, model: str) -> ModelMetadata | None:
        with self.db.transaction() as conn:
            row = (
                conn.execute(select(model_metadata).where(model_metadata.c.model == model)).mappings().first()
            )
        return None if row is None else _row(row)


def _row(row: RowMapping) -> ModelMetadata:
    return ModelMetadata(
        row["model"], row["likes"], bool(row["available"]), row["license"], row["refreshed_at"]
    )


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
