"""Admin lists: blocked models, official providers (exempt from the rate limit) and flagged models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from backend.errors import AlreadyListed, NotListed
from backend.storage.database import Database
from backend.storage.schema import blocklist, flags, official_providers


@dataclass(frozen=True)
class ListEntry:
    key: str  # a model id, "ORG/*", or a namespace
    reason: str | None
    added_by: str
    added_at: datetime


class _KeyedList:
    """A table of keys with who added them, when and why."""

    def __init__(self, db: Database, table: Table, what: str) -> None:
        self.db = db
        self.table = table
        self.key = table.primary_key.columns.values()[0]
        self.what = what

    def add(self, key: str, added_by: str, now: datetime, reason: str | None = None) -> None:
        values = {self.key.name: key, "added_by": added_by, "added_at": now}
        if "reason" in self.table.c:
            values["reason"] = reason or ""
        try:
            with self.db.transaction() as conn:
                conn.execute(insert(self.table).values(values))
        except IntegrityError as exc:
            raise AlreadyListed(f"{key} is already {self.what}") from exc

    def remove(self, key: str) -> None:
        with self.db.transaction() as conn:
            deleted = conn.execute(delete(self.table).where(self.key == key)).rowcount
        if deleted != 1:
            raise NotListed(f"{key} is not {self.what}")

    def entries(self) -> list[ListEntry]:
        with self.db.transaction() as conn:
            rows = conn.execute(select(self.table).order_by(self.key)).mappings().all()
        return [ListEntry(r[self.key.name], r.get("reason"), r["added_by"], r["added_at"]) for r in rows]

    def keys(self) -> frozenset[str]:
        with self.db.transaction() as conn:
            return frozenset(conn.execute(select(self.key)).scalars())

    def find(self, keys: list[str]) -> ListEntry | None:
        with self.db.transaction() as conn:
            row = conn.execute(select(self.table).where(self.key.in_(keys)).limit(1)).mappings().first()
        return (
            None
            if row is None
            else ListEntry(row[self.key.name], row.get("reason"), row["added_by"], row["added_at"])
        )


class ModerationRepository:
    def __init__(self, db: Database) -> None:
        self.blocklist = _KeyedList(db, blocklist, "on the blocklist")
        self.official_providers = _KeyedList(db, official_providers, "an official provider")
        self.flags = _KeyedList(db, flags, "flagged")

    def blocked_entry(self, model: str) -> ListEntry | None:
        """The blocklist entry matching a model id exactly or through its namespace ("ORG/*")."""
        return self.blocklist.find([model, model.split("/", 1)[0] + "/*"])
