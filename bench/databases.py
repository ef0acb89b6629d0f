"""The databases a bench runs on: a fresh SQLite file, or a fresh schema in a PostgreSQL database that is
dropped afterwards (LEADERBOARD_BENCH_POSTGRES_URL, default the test database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get(
    "LEADERBOARD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty database of ``kind`` (sqlite or postgres), removed when the block ends."""
    if kind == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    schema = "bench_" + uuid.uuid4().hex[:12]
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        separator = "&" if "?" in POSTGRES_URL else "?"
        try:
            yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


def server_version(kind: str) -> str | None:
    """The database server's version string, or None when it cannot be reached."""
    if kind == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    except Exception:  # any failure means: not reachable
        return None
    finally:
        engine.dispose()
