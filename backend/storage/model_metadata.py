"""The Hub metadata of submitted models, as last refreshed: likes, availability, license."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, select, update
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
        """Insert or replace a model's metadata (the last refresh wins; refreshes are idempotent)."""
        values = {
            "likes": entry.likes,
            "available": entry.available,
            "license": entry.license,
            "refreshed_at": entry.refreshed_at,
        }
        with self.db.transaction() as conn:
            updated = conn.execute(
                update(model_metadata).where(model_metadata.c.model == entry.model).values(values)
            ).rowcount
            if updated:
                return
        try:
            with self.db.transaction() as conn:
                conn.execute(model_metadata.insert().values(model=entry.model, **values))
        except IntegrityError:  # another scheduler inserted it meanwhile: update instead
            with self.db.transaction() as conn:
                conn.execute(
                    update(model_metadata).where(model_metadata.c.model == entry.model).values(values)
                )

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
