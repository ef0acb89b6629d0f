"""The database driver: one engine per URL, SQLite tuned for many writers, migrations to head.

SQLite (WAL) is the embedded default: every write transaction starts with BEGIN IMMEDIATE, so writers
queue on the database lock instead of failing half way, and a claim is atomic. PostgreSQL is the
production database: claims use FOR UPDATE SKIP LOCKED and connections are checked before use, so a
restarted server costs a reconnect, not a request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from backend.errors import ConfigurationError, DatabaseUnavailable, InvalidInput

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 60.0


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """An engine and the transactions the repositories run in."""

    def __init__(self, url: str, pool_size: int = 20, max_overflow: int = 20) -> None:
        """``pool_size`` connections are kept open (PostgreSQL); up to ``max_overflow`` more are opened under
        load and closed when returned, so a pool smaller than the usual concurrency pays a new connection
        (several ms) on many transactions."""
        self.url = normalize_url(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise ConfigurationError(f"LEADERBOARD_DATABASE_URL is not a database URL: {url!r}") from exc
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self.url)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                self.url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow
            )
        else:
            raise ConfigurationError(
                f"unsupported database '{self.dialect}' in LEADERBOARD_DATABASE_URL: use sqlite:///FILE "
                "or postgresql://USER@HOST/DB"
            )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise DatabaseUnavailable(f"database error: {exc.orig}") from exc
        except PoolTimeout as exc:  # every connection busy for pool_timeout seconds: overloaded, try later
            raise DatabaseUnavailable(f"no database connection free: {exc}") from exc
        except DataError as exc:  # a value the database cannot hold (a NUL character, a number too large)
            raise InvalidInput(f"a value cannot be stored: {str(exc.orig).splitlines()[0]}") from exc

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration, or to ``revision`` (safe to call from several
        processes at once)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migration() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    @contextmanager
    def _migration(self) -> Iterator[Connection]:
        """The transaction migrations run in, one process at a time.

        PostgreSQL: an advisory lock serialises concurrent upgrades. SQLite: BEGIN IMMEDIATE does, and
        foreign keys are off meanwhile, because a batch migration rebuilds a table and the rebuild's DROP
        TABLE would otherwise cascade to the rows referencing it; they are checked before the commit.
        """
        if self.is_postgres:
            with self.transaction() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
                yield conn
            return
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before BEGIN
                try:
                    with conn.begin():
                        yield conn
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise ConfigurationError(
                                f"the migration left rows whose references are broken: {broken[:5]}"
                            )
                finally:
                    raw.execute("PRAGMA foreign_keys=ON")
        except OperationalError as exc:
            raise DatabaseUnavailable(f"database error: {exc.orig}") from exc

    def is_current(self) -> bool:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return False
            return set(MigrationContext.configure(conn).get_current_heads()) == heads

    def ensure_schema(self) -> None:
        if not self.is_current():
            self.upgrade()

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers a trivial query."""
        with self.transaction() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite's own BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
