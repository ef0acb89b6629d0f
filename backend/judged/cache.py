"""The durable judgement cache: every verdict a judge gave, in one SQLite file, so nothing is judged twice.

A judgement is keyed on what decided it: the instruction, the output shown first, the output shown second,
the judge (``identity``: "<repo>@<revision>" for a local judge, "endpoint:<model>" for an endpoint), the
sha256 of its prompt template and its decoding settings (canonical JSON). The key is the sha256 of a
canonical JSON of those six, so changing any of them is a different judgement, and the order the outputs
were shown in is part of it.

Each judgement is committed the moment it is written (autocommit, WAL, synchronous=FULL): a judging run
killed with SIGKILL loses only the judgements still under way. Several processes may read and write the
file at once; a writer waits up to ``busy_timeout_s`` for another's lock, and when two of them judge the
same ordering the first one stored stands (INSERT OR IGNORE), so every reader sees one verdict per key.
Rows read back are checked (types, ranges, sizes, and that they belong to the judge that asks) before they
are trusted: a file edited or damaged by hand is refused with what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.errors import JudgementCacheInvalid
from backend.judged.verdicts import Shown, Verdict

#: The schema this module writes (SQLite's user_version); a file with another one is refused.
SCHEMA_VERSION = 1
#: A raw completion, in characters: a judge's reasoning of thousands of tokens, or one token's logprobs.
MAX_RAW_CHARS = 1_000_000
DEFAULT_BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,          -- sha256 of the canonical JSON of the six key parts
    judge TEXT NOT NULL,           -- the judge's identity
    prompt_hash TEXT NOT NULL,     -- sha256 of its prompt template file
    decoding TEXT NOT NULL,        -- its decoding settings, canonical JSON
    preference REAL,               -- in the shown order, 1..2; NULL: the answer held no verdict
    raw_completion TEXT NOT NULL,
    price REAL,                    -- NULL: not known
    seconds REAL NOT NULL,
    created_at TEXT NOT NULL       -- ISO 8601, UTC
)
"""


def canonical_json(value: Any) -> str:
    """One spelling of a JSON value: sorted keys, no spaces, no NaN; what keys are hashed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class JudgeSignature:
    """The parts of a cache key that name the judge: who it is, its prompt and how it decodes."""

    identity: str
    prompt_hash: str
    decoding: str  # canonical JSON

    @classmethod
    def of(cls, identity: str, prompt_hash: str, decoding: Mapping[str, Any]) -> JudgeSignature:
        return cls(identity, prompt_hash, canonical_json(dict(decoding)))

    def key(self, shown: Shown) -> str:
        """The cache key of this judge's judgement of ``shown``."""
        parts = {
            "instruction": shown.instruction,
            "first": shown.first,
            "second": shown.second,
            "judge": self.identity,
            "prompt_hash": self.prompt_hash,
            "decoding": json.loads(self.decoding),
        }
        return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


class JudgementCache:
    """Verdicts by key, in the SQLite file at ``path`` (created with its folder when missing)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise JudgementCacheInvalid(
                str(self.path),
                f"not a judgement cache SQLite can open ({exc})",
                "give the path of a judgement cache, or a new file; move a damaged one aside",
            ) from exc

    def _create(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # one process creates the schema; the others wait, then see it
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute(_SCHEMA)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if version not in (0, SCHEMA_VERSION):
            raise JudgementCacheInvalid(
                str(self.path),
                f"its schema is version {version}, this code reads version {SCHEMA_VERSION}",
                "use the version of the leaderboard that wrote it, or move the file aside to judge anew",
            )

    def __enter__(self) -> JudgementCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, judge: JudgeSignature, shown: Shown) -> Verdict | None:
        """The stored verdict of ``judge`` on ``shown``, or None when it was never judged."""
        key = judge.key(shown)
        with self._lock:
            row = self._db.execute(
                "SELECT judge, prompt_hash, decoding, preference, raw_completion, price, seconds "
                "FROM judgements WHERE key = ?",
                (key,),
            ).fetchone()
        return None if row is None else self._verdict(key, judge, row)

    def put(self, judge: JudgeSignature, shown: Shown, verdict: Verdict) -> bool:
        """Store (and commit) ``verdict``; False when this ordering was already stored (that one stands)."""
        if len(verdict.raw_completion) > MAX_RAW_CHARS:
            raise ValueError(f"a raw completion has at most {MAX_RAW_CHARS} characters")
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO judgements (key, judge, prompt_hash, decoding, preference, "
                "raw_completion, price, seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    judge.key(shown),
                    judge.identity,
                    judge.prompt_hash,
                    judge.decoding,
                    verdict.preference,
                    verdict.raw_completion,
                    verdict.price,
                    verdict.seconds,
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )
            return cursor.rowcount == 1

    def count(self, judge: JudgeSignature | None = None) -> int:
        """How many judgements are stored (of ``judge`` alone, when given)."""
        with self._lock:
            if judge is None:
                return int(self._db.execute("SELECT count(*) FROM judgements").fetchone()[0])
            return int(
                self._db.execute(
                    "SELECT count(*) FROM judgements WHERE judge = ? AND prompt_hash = ? AND decoding = ?",
                    (judge.identity, judge.prompt_hash, judge.decoding),
                ).fetchone()[0]
            )

    def _verdict(self, key: str, judge: JudgeSignature, row: tuple[Any, ...]) -> Verdict:
        """The row, checked: it is this judge's, and every field has the type and range it is written with."""
        stored_judge, prompt_hash, decoding, preference, raw, price, seconds = row

        def refuse(problem: str) -> JudgementCacheInvalid:
            return JudgementCacheInvalid(
                str(self.path),
                f"the judgement {key[:12]}... {problem}",
                f"delete that row (DELETE FROM judgements WHERE key = '{key}') to judge it again, or move "
                "the file aside",
            )

        if (stored_judge, prompt_hash, decoding) != (judge.identity, judge.prompt_hash, judge.decoding):
            raise refuse("was stored for another judge, prompt or decoding than its key says")
        if not isinstance(raw, str) or len(raw) > MAX_RAW_CHARS:
            raise refuse(f"has a raw completion that is not text of at most {MAX_RAW_CHARS} characters")
        if preference is not None and not (_is_number(preference) and 1.0 <= preference <= 2.0):
            raise refuse(f"has the preference {preference!r}, not a number from 1 to 2 or NULL")
        if price is not None and not (_is_number(price) and price >= 0):
            raise refuse(f"has the price {price!r}, not a number >= 0 or NULL")
        if not (_is_number(seconds) and seconds >= 0):
            raise refuse(f"has the duration {seconds!r}, not a number of seconds >= 0")
        return Verdict(
            preference=None if preference is None else float(preference),
            raw_completion=raw,
            price=None if price is None else float(price),
            seconds=float(seconds),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
