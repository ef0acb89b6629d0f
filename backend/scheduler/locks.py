"""Job locks: a scheduled job that must not run on two schedulers at once (publish, mirror, metadata)
holds one for its duration. PostgreSQL: a session advisory lock. SQLite (one machine): a file lock beside
the database file."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from backend.storage.database import Database


def _key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(
        hashlib.sha256(f"leaderboard-scheduler:{name}".encode()).digest()[:8], "big", signed=True
    )


@contextmanager
def job_lock(db: Database, name: str) -> Iterator[bool]:
    """Try to take the lock ``name``; yields whether this process holds it (never waits)."""
    if db.is_postgres:
        with db.engine.connect() as conn:
            held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(name)}).scalar())
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(name)})
                    conn.commit()
        return
    database = make_url(db.url).database
    folder = Path(database).resolve().parent if database and database != ":memory:" else Path.cwd()
    path = folder / f".leaderboard-scheduler-{name}.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
