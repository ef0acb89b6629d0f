"""The arena's battles out and in: export in the public Chatbot Arena's format, import of such files, the
stamp publishing compares, and the suspicious-voter report over stored votes.

One function, ``battle_record``, turns a stored battle into the public format: export and publishing both
use it, and it never carries who voted or from where. An import is checked whole before anything is
written (the optional fields by backend.arena.records, then the required ones by backend.arena.battles, the
one source of their rules), then written a batch at a time, one transaction a batch; each battle carries the
key of its record (records.import_key), so importing a file again, or an updated release of it, adds only
the battles it does not hold yet.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend.arena.battles import MAX_FILE_BYTES, SUFFIXES, read_battles
from backend.arena.ratings import Ratings
from backend.arena.records import (
    BattleRecord,
    Exchange,
    Occurrences,
    RecordWriter,
    conversation,
    parse_extras,
    raw_records,
)
from backend.errors import BattlesInvalid, InvalidInput
from backend.services.arena import ArenaService
from backend.services.arena_report import ReportRules, SuspiciousVoter, suspicious_voters
from backend.storage.arena import Battle, ImportedBattle

log = logging.getLogger(__name__)

#: Battles read from the database, and written to it, a batch (and a transaction) at a time.
BATCH = 1000
#: What publishing's stamp records of the format: a change here republishes every arena's files.
RECORD_FORMAT = 1


def battle_record(arena: str, battle: Battle) -> dict[str, Any]:
    """A voted battle in the public arena's format (FIELDS), with ``mode`` (live, static or imported) and
    no voter identity or address. ``question_id`` is an imported battle's own, else ``<arena>-<id>``."""
    exchanges = [Exchange(t.prompt, t.answer_a, t.answer_b) for t in battle.turns]
    voted = battle.voted_at or battle.created_at
    own_id = battle.mode == "imported" and battle.question is not None
    return {
        "question_id": battle.question if own_id else f"{arena}-{battle.id}",
        "model_a": battle.model_a,
        "model_b": battle.model_b,
        "winner": battle.winner,
        "turn": len(battle.turns),
        "anony": battle.anony,
        "tstamp": voted.timestamp(),
        "mode": battle.mode,
        "conversation_a": conversation(exchanges, "a"),
        "conversation_b": conversation(exchanges, "b"),
    }


@dataclass(frozen=True)
class ImportReport:
    source: str
    read: int  # records in the file
    added: int  # battles new to the arena
    already: int  # battles it held already (imported before)


class ArenaDataService:
    """Export, import, the voters report and the publishing stamp of one arena. ``arena``'s ratings are
    refitted whenever the votes changed (its ratings_seconds is 0): published ratings match the battles."""

    def __init__(self, arena: ArenaService, clock: Callable[[], datetime], batch: int = BATCH) -> None:
        exact = replace(arena.limits, ratings_seconds=0.0)
        self.arena = ArenaService(
            arena.config, arena.repository, clock, streamer=None, limits=exact, pairing=arena.pairing
        )
        self.repository = arena.repository
        self.clock = clock
        self.batch = batch

    @property
    def name(self) -> str:
        return self.arena.name

    @property
    def title(self) -> str:
        return self.arena.config.title

    # Out.

    def records(self) -> Iterator[list[dict[str, Any]]]:
        """Every voted battle as a record, in batches (as the repository reads them)."""
        batch: list[dict[str, Any]] = []
        for battle in self.repository.voted_battles(self.name, self.batch):
            batch.append(battle_record(self.name, battle))
            if len(batch) >= self.batch:
                yield batch
                batch = []
        if batch:
            yield batch

    def export(self, path: Path, source: str | None = None) -> int:
        """Write every voted battle to ``path`` (the suffix chooses the format), through a temporary file
        beside it and a rename; returns how many."""
        shown = source or str(path)
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise InvalidInput(
                f"{shown}: the format is chosen by the suffix, and '{path.suffix or '(none)'}' is none of "
                f"{', '.join(SUFFIXES)}: name the file .json, .jsonl, .csv or .parquet"
            )
        folder = path.parent
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise InvalidInput(f"{shown}: cannot write there ({exc.strerror}): give a writable path") from exc
        try:
            with os.fdopen(fd, "wb") as stream:
                writer = RecordWriter(stream, suffix)
                for batch in self.records():
                    writer.write(batch)
                writer.close()
            os.replace(temporary, path)
        except OSError as exc:
            raise InvalidInput(f"{shown}: cannot write there ({exc.strerror}): give a writable path") from exc
        finally:
            Path(temporary).unlink(missing_ok=True)
        log.info("arena exported", extra={"arena": self.name, "battles": writer.count})
        return writer.count

    def ratings(self) -> Ratings | None:
        return self.arena.ratings()

    def stamp(self) -> dict[str, Any]:
        """What the published files are built from: the votes (how many, the newest battle), the ratings'
        settings and the record format. Publishing rewrites the arena's files when it changes."""
        votes, newest = self.repository.vote_stamp(self.name)
        settings = self.arena.config.ratings
        return {
            "arena": self.name,
            "votes": votes,
            "newest_battle": newest,
            "ratings": {
                "bootstrap": settings.bootstrap,
                "seed": settings.seed,
                "anchor": None if settings.anchor is None else list(settings.anchor),
            },
            "format": RECORD_FORMAT,
        }

    # In.

    def import_file(self, path: Path, source: str | None = None) -> ImportReport:
        """Import a battles file as ``imported`` battles with no user: checked whole, then written a batch
        (one transaction) at a time; battles imported before are skipped (their keys are stored)."""
        shown = source or str(path)
        _check_file(path, shown)
        read = 0
        for label, raw in raw_records(path, shown):  # the optional fields, before anything is written
            parse_extras(raw, shown, label)
            read += 1
        read_battles(path, shown)  # the required ones, by the reader ratings use
        now = self.clock()
        occurrences = Occurrences()
        added = 0
        batch: list[ImportedBattle] = []
        for label, raw in raw_records(path, shown):
            record = BattleRecord(
                raw["model_a"], raw["model_b"], raw["winner"], parse_extras(raw, shown, label)
            )
            batch.append(_imported(record, occurrences.key(record), now))
            if len(batch) >= self.batch:
                added += self.repository.insert_imported(self.name, batch)
                batch = []
        added += self.repository.insert_imported(self.name, batch)
        log.info("arena imported", extra={"arena": self.name, "read": read, "added": added})
        return ImportReport(source=shown, read=read, added=added, already=read - added)

    # The voters report.

    def suspicious(self, days: float, rules: ReportRules | None = None) -> list[SuspiciousVoter]:
        """The voters of the last ``days`` days that break a rule of the report (arena_report)."""
        since = self.clock() - timedelta(days=days)
        return suspicious_voters(self.repository.voter_votes(self.name, since), rules or ReportRules())


def _check_file(path: Path, shown: str) -> None:
    """The file itself, not a link (it could lead anywhere), regular, and within the size limit."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise BattlesInvalid(
            shown, f"cannot be read ({exc.strerror})", "give the path of a battles file"
        ) from exc
    if stat.S_ISLNK(info.st_mode):
        raise BattlesInvalid(shown, "is a symbolic link", "give the file itself (copy it here if need be)")
    if not stat.S_ISREG(info.st_mode):
        raise BattlesInvalid(shown, "is not a regular file", "give the path of a battles file")
    if info.st_size > MAX_FILE_BYTES:
        raise BattlesInvalid(
            shown,
            f"is {info.st_size / 2**30:.1f} GiB, over the {MAX_FILE_BYTES // 2**30} GiB limit",
            "split the file, or write Parquet",
        )


def _imported(record: BattleRecord, key: str, now: datetime) -> ImportedBattle:
    """What the database stores of a record. Without conversations, each of its ``turn`` turns (default 1)
    is a placeholder: an empty prompt and no answers, which export reads back as no conversation."""
    extras = record.extras
    if extras.exchanges is None:
        turns: tuple[tuple[str, str | None, str | None], ...] = (("", None, None),) * (extras.turn or 1)
    else:
        turns = tuple((x.prompt, x.answer_a, x.answer_b) for x in extras.exchanges)
    voted = now if extras.tstamp is None else datetime.fromtimestamp(extras.tstamp, UTC)
    return ImportedBattle(
        import_key=key,
        model_a=record.model_a,
        model_b=record.model_b,
        winner=record.winner,
        anony=True if extras.anony is None else extras.anony,
        voted_at=voted,
        question=extras.question_id,
        turns=turns,
    )
