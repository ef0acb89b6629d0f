"""Battle records with their conversations, in the public Chatbot Arena's format, read and written whole.

battles.py reads the three fields ratings need (``model_a``, ``model_b``, ``winner``) and holds the rules
for them; this module reads the others an import stores, each typed and size-checked with the record, the
field and the fix named: ``anony`` (bool), ``tstamp`` (Unix seconds), ``turn`` (the number of user turns),
``question_id`` (at most 200 characters) and ``conversation_a``/``conversation_b`` (OpenAI-style lists of
``{role, content}``: an optional leading ``system`` message, then ``user`` and ``assistant`` messages in
turn, the same prompts on both sides). Other fields (``judge``, ``language``...) are tolerated and not kept,
and so are keys of a message other than role and content. A leading system message is checked and counted in
the record's identity but not stored: the arena's system prompt is its config's.

It also writes records in the same four formats (the suffix chooses), a batch at a time, so an export of
millions of battles never holds them all: JSON (a list), JSON lines, CSV (conversations as JSON text in
their cells) and Parquet (conversations as lists of {role, content} structs, as ``datasets`` loads them).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from backend.arena.battles import REQUIRED, SUFFIXES
from backend.errors import BattlesInvalid

#: Turns of one battle (a live battle has at most LEADERBOARD_ARENA_MAX_TURNS, itself at most 100).
MAX_TURNS = 100
#: One message's content, in characters (an answer of 32k tokens is about 130k characters).
MAX_CONTENT_CHARS = 200_000
#: Every content of one record together, in characters.
MAX_RECORD_CHARS = 4_000_000
#: A question id, in characters (the database column's size).
MAX_QUESTION_ID_CHARS = 200
#: tstamp: from 1970 to the year 3000, in seconds.
MAX_TSTAMP = 32_503_680_000.0
#: A CSV cell may hold a whole conversation: pyarrow's default block (1 MB) would refuse a long one.
CSV_BLOCK_BYTES = 64 << 20
ROLES = ("user", "assistant", "system")
OPTIONAL = ("question_id", "anony", "tstamp", "turn", "conversation_a", "conversation_b")
#: The fields of an exported record, in order. ``mode`` (live, static or imported) is ours.
FIELDS = (
    "question_id", "model_a", "model_b", "winner", "turn", "anony", "tstamp", "mode", "conversation_a",
    "conversation_b",
)  # fmt: skip
_MESSAGE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_SCALARS = [
    ("question_id", pa.string()),
    ("model_a", pa.string()),
    ("model_b", pa.string()),
    ("winner", pa.string()),
    ("turn", pa.int64()),
    ("anony", pa.bool_()),
    ("tstamp", pa.float64()),
    ("mode", pa.string()),
]
PARQUET_SCHEMA = pa.schema([*_SCALARS, ("conversation_a", _MESSAGE), ("conversation_b", _MESSAGE)])
CSV_SCHEMA = pa.schema([*_SCALARS, ("conversation_a", pa.string()), ("conversation_b", pa.string())])
CONVERSATION_RULE = (
    "write a list of {role, content} messages: an optional system message first, then user and assistant "
    "in turn (the same user prompts in conversation_a and conversation_b), or leave both out"
)


@dataclass(frozen=True)
class Exchange:
    """One turn: the prompt and each side's answer (None: that side did not answer)."""

    prompt: str
    answer_a: str | None
    answer_b: str | None


@dataclass(frozen=True)
class Extras:
    """The optional fields of a record as the file gives them (None: absent)."""

    question_id: str | None
    anony: bool | None
    tstamp: float | None
    turn: int | None
    system: str | None  # a leading system message (the same on both sides), not stored
    exchanges: tuple[Exchange, ...] | None  # None: no conversation


@dataclass(frozen=True)
class BattleRecord:
    """A record as read: the required fields (checked by battles.read_battles) and the optional ones."""

    model_a: str
    model_b: str
    winner: str
    extras: Extras

    def canonical(self) -> bytes:
        """The record's content as compact JSON with sorted keys: the same for the same battle in any of
        the four formats (absent fields are null, numbers as floats or ints as typed)."""
        e = self.extras
        content = {
            "model_a": self.model_a, "model_b": self.model_b, "winner": self.winner, "anony": e.anony,
            "tstamp": e.tstamp, "turn": e.turn, "question_id": e.question_id, "system": e.system,
            "exchanges": None if e.exchanges is None
            else [[x.prompt, x.answer_a, x.answer_b] for x in e.exchanges],
        }  # fmt: skip
        return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def import_key(canonical: bytes, occurrence: int) -> str:
    """sha256 of the record's canonical content and its occurrence among identical records of the file
    (0, 1, ...): the same file imports as the same keys, and identical records stay separate battles."""
    return hashlib.sha256(canonical + b"\n" + str(occurrence).encode()).hexdigest()


class Occurrences:
    """Counts identical records as a file is read (by a digest of their content, 32 bytes each)."""

    def __init__(self) -> None:
        self._seen: dict[bytes, int] = {}

    def key(self, record: BattleRecord) -> str:
        canonical = record.canonical()
        digest = hashlib.sha256(canonical).digest()
        occurrence = self._seen.get(digest, 0)
        self._seen[digest] = occurrence + 1
        return import_key(canonical, occurrence)


# Reading.


def raw_records(path: Path, source: str) -> Iterator[tuple[str, Any]]:
    """(label, record) of every record of the file, labelled as battles.read_battles labels them; CSV and
    Parquet are read a batch at a time, JSON lines a line at a time. CSV cells are text (see parse_extras)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BattlesInvalid(
            source,
            f"the format is chosen by the file's suffix, and '{path.suffix or '(none)'}' is none of "
            f"{', '.join(SUFFIXES)}",
            "rename the file to end in .json, .jsonl, .csv or .parquet",
        )
    if suffix == ".json":
        yield from _json_records(path, source)
    elif suffix == ".jsonl":
        yield from _jsonl_records(path, source)
    elif suffix == ".csv":
        yield from _csv_records(path, source)
    else:
        yield from _parquet_records(path, source)


def _loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:
        return json.loads
    loads: Callable[[bytes], Any] = orjson.loads
    return loads


def _json_records(path: Path, source: str) -> Iterator[tuple[str, Any]]:
    try:
        data = _loads()(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BattlesInvalid(source, f"is not valid JSON ({exc})", "write a JSON list of records") from exc
    if not isinstance(data, list):
        raise BattlesInvalid(
            source, f"is a JSON {type(data).__name__}, not a list of records", "write a JSON list of records"
        )
    for i, record in enumerate(data):
        yield f"record {i}", record


def _jsonl_records(path: Path, source: str) -> Iterator[tuple[str, Any]]:
    loads = _loads()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BattlesInvalid(
                    source, f"line {number} is not valid JSON ({exc})", "write one JSON record a line"
                ) from exc
            yield f"line {number}", record


def _csv_records(path: Path, source: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.csv as pcsv

    fields = [*REQUIRED, *OPTIONAL]
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pcsv.ConvertOptions(
                include_columns=fields,
                include_missing_columns=True,
                column_types={field: pa.string() for field in fields},
                strings_can_be_null=False,
            ),
        )
        row = 0
        for batch in reader:
            for record in batch.to_pylist():
                yield f"row {row} (counted from 0, after the header)", _Text(record)
                row += 1
    except (pa.ArrowInvalid, OSError) as exc:
        raise BattlesInvalid(
            source, f"cannot be read as CSV ({exc})", "write a CSV file with a header"
        ) from exc


def _parquet_records(path: Path, source: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        present = [f for f in (*REQUIRED, *OPTIONAL) if f in parquet.schema_arrow.names]
        row = 0
        for batch in parquet.iter_batches(batch_size=1024, columns=present):
            for record in batch.to_pylist():
                yield f"row {row}", record
                row += 1
    except (pa.ArrowInvalid, OSError) as exc:
        raise BattlesInvalid(source, f"cannot be read as Parquet ({exc})", "write a Parquet table") from exc


class _Text(dict[str, Any]):
    """A CSV row: every cell is text, and an empty cell is an absent field."""


def _refuse(source: str, label: str, field: str, problem: str, fix: str) -> BattlesInvalid:
    return BattlesInvalid(source, f"{label}: {field} {problem}", fix)


def parse_extras(record: Any, source: str, label: str) -> Extras:
    """The optional fields of one record, each checked for type and size (BattlesInvalid names the record,
    the field and the fix). The required fields are battles.read_battles's to check, except that a model
    name holding a NUL is refused here (no database stores one)."""
    if not isinstance(record, dict):
        raise BattlesInvalid(
            source, f"{label} is a {type(record).__name__}, not a record", "write one JSON object a record"
        )
    text = isinstance(record, _Text)
    for field in ("model_a", "model_b"):
        if isinstance(record.get(field), str) and "\x00" in record[field]:
            raise _refuse(source, label, field, "contains a NUL character", f"remove it from {field}")
    value = {f: _untext(record.get(f)) if text else record.get(f) for f in OPTIONAL}

    question_id = value["question_id"]
    if question_id is not None:
        if not isinstance(question_id, str):
            raise _refuse(source, label, "question_id", f"is a {_kind(question_id)}, not a string",
                          "write question_id as a string, or leave it out")  # fmt: skip
        if len(question_id) > MAX_QUESTION_ID_CHARS:
            raise _refuse(source, label, "question_id", f"has {len(question_id):,} characters, over "
                          f"{MAX_QUESTION_ID_CHARS}", "shorten question_id, or leave it out")  # fmt: skip
        if "\x00" in question_id:
            raise _refuse(
                source, label, "question_id", "contains a NUL character", "remove it from question_id"
            )

    anony = value["anony"]
    if text and anony is not None:
        anony = {"true": True, "1": True, "false": False, "0": False}.get(anony.strip().lower(), anony)
    if anony is not None and not isinstance(anony, bool):
        raise _refuse(source, label, "anony", f"is {_shown(anony)}, not true or false",
                      "write anony as true (the names were hidden when the vote was cast) or false, or leave "
                      "it out (true)")  # fmt: skip

    tstamp = value["tstamp"]
    if text and tstamp is not None:
        tstamp = _number_of_text(tstamp)
    if isinstance(tstamp, datetime):  # a Parquet timestamp column
        tstamp = (tstamp if tstamp.tzinfo else tstamp.replace(tzinfo=UTC)).timestamp()
    if tstamp is not None:
        if not isinstance(tstamp, int | float) or isinstance(tstamp, bool) or not math.isfinite(tstamp):
            raise _refuse(source, label, "tstamp", f"is {_shown(tstamp)}, not a number",
                          "write tstamp as the vote's Unix time in seconds, or leave it out (the import's time)")  # fmt: skip
        if not 0 <= tstamp <= MAX_TSTAMP:
            raise _refuse(source, label, "tstamp", f"is {tstamp}, outside 1970 to 3000",
                          "write tstamp as the vote's Unix time in seconds")  # fmt: skip
        tstamp = float(tstamp)

    turn = value["turn"]
    if text and turn is not None:
        number = _number_of_text(turn)
        turn = int(number) if isinstance(number, float) and number.is_integer() else number
    if turn is not None:
        if not isinstance(turn, int) or isinstance(turn, bool):
            raise _refuse(source, label, "turn", f"is {_shown(turn)}, not a whole number",
                          "write turn as the number of user turns, or leave it out")  # fmt: skip
        if not 1 <= turn <= MAX_TURNS:
            raise _refuse(source, label, "turn", f"is {turn}, outside 1 to {MAX_TURNS}",
                          f"keep battles of 1 to {MAX_TURNS} turns")  # fmt: skip

    system, exchanges = _conversations(value, text, source, label)
    if exchanges is not None and turn is not None and turn != len(exchanges):
        raise _refuse(source, label, "turn", f"is {turn}, but the conversations have {len(exchanges)} user turn(s)",
                      "make turn the number of user messages, or leave it out")  # fmt: skip
    return Extras(question_id, anony, tstamp, turn, system, exchanges)


def _untext(value: Any) -> Any:
    return None if value is None or value == "" else value


def _number_of_text(value: str) -> Any:
    try:
        return float(value) if any(c in value for c in ".eEnN") else int(value)
    except ValueError:
        return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    return repr(value[:40]) if isinstance(value, str) else f"a {_kind(value)}"


def _conversations(
    value: Mapping[str, Any], text: bool, source: str, label: str
) -> tuple[str | None, tuple[Exchange, ...] | None]:
    sides = {}
    for field in ("conversation_a", "conversation_b"):
        raw = value[field]
        if isinstance(raw, str) and (text or raw.startswith("[")):  # JSON text: a CSV cell, a Parquet string
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise _refuse(source, label, field, f"is not valid JSON ({exc})", CONVERSATION_RULE) from exc
        sides[field] = None if raw is None or raw == [] else _messages(raw, field, source, label)
    a, b = sides["conversation_a"], sides["conversation_b"]
    if a is None and b is None:
        return None, None
    if a is None or b is None:
        missing = "conversation_a" if a is None else "conversation_b"
        raise _refuse(source, label, missing, "is missing while the other side has one",
                      "give both conversations, or neither")  # fmt: skip
    (system_a, turns_a), (system_b, turns_b) = a, b
    if not turns_a:
        raise _refuse(source, label, "conversation_a", "has no user message", CONVERSATION_RULE)
    if system_a != system_b:
        raise _refuse(source, label, "conversation_b", "has another system message than conversation_a",
                      "give both sides the same system message (both models were asked the same)")  # fmt: skip
    if [p for p, _ in turns_a] != [p for p, _ in turns_b]:
        raise _refuse(source, label, "conversation_b", "asks other user prompts than conversation_a",
                      "give both sides the same user messages, in the same order")  # fmt: skip
    if len(turns_a) > MAX_TURNS:
        raise _refuse(source, label, "conversation_a", f"has {len(turns_a)} user turns, over {MAX_TURNS}",
                      f"keep battles of at most {MAX_TURNS} turns")  # fmt: skip
    size = sum(len(p) + len(x or "") + len(y or "") for (p, x), (_, y) in zip(turns_a, turns_b, strict=True))
    if size > MAX_RECORD_CHARS:
        raise _refuse(source, label, "conversation_a", f"and conversation_b hold {size:,} characters, over "
                      f"{MAX_RECORD_CHARS:,}", "leave out the longest battles")  # fmt: skip
    exchanges = tuple(Exchange(p, x, y) for (p, x), (_, y) in zip(turns_a, turns_b, strict=True))
    return system_a, exchanges


def _messages(
    raw: Any, field: str, source: str, label: str
) -> tuple[str | None, list[tuple[str, str | None]]]:
    """(system message, [(prompt, answer or None)]) of one side's conversation."""
    if not isinstance(raw, list):
        raise _refuse(source, label, field, f"is a {_kind(raw)}, not a list of messages", CONVERSATION_RULE)
    if len(raw) > 2 * MAX_TURNS + 1:
        raise _refuse(source, label, field, f"has {len(raw):,} messages, over {2 * MAX_TURNS + 1}",
                      f"keep battles of at most {MAX_TURNS} turns")  # fmt: skip
    system: str | None = None
    turns: list[tuple[str, str | None]] = []
    expected: tuple[str, ...] = ("system", "user")
    for i, message in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise _refuse(source, label, where, f"is a {_kind(message)}, not a {{role, content}} message",
                          CONVERSATION_RULE)  # fmt: skip
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _refuse(source, label, f"{where}.role", f"is {_shown(role)}",
                          f"give every message a role: {', '.join(ROLES)}")  # fmt: skip
        if not isinstance(content, str):
            raise _refuse(source, label, f"{where}.content", f"is a {_kind(content)}, not a string",
                          "give every message its text as content")  # fmt: skip
        if len(content) > MAX_CONTENT_CHARS:
            raise _refuse(source, label, f"{where}.content", f"has {len(content):,} characters, over "
                          f"{MAX_CONTENT_CHARS:,}", "leave out the battles with the longest messages")  # fmt: skip
        if "\x00" in content:
            raise _refuse(source, label, f"{where}.content", "contains a NUL character", "remove it")
        if role not in expected:
            raise _refuse(source, label, f"{where}.role", f"is {role} where {' or '.join(expected)} comes",
                          CONVERSATION_RULE)  # fmt: skip
        if role == "system":
            system = content
        elif role == "user":
            turns.append((content, None))
        else:
            turns[-1] = (turns[-1][0], content)
        expected = ("assistant",) if role == "user" else ("user",)
    return system, turns


# Conversations of stored turns, and writing.


def conversation(exchanges: Sequence[Exchange], side: str) -> list[dict[str, str]] | None:
    """``side``'s conversation in OpenAI's shape: each prompt, then that side's answer when it has one;
    None for a battle stored without its conversation (every turn an empty prompt with no answer)."""
    if all(x.prompt == "" and x.answer_a is None and x.answer_b is None for x in exchanges):
        return None
    messages = []
    for x in exchanges:
        messages.append({"role": "user", "content": x.prompt})
        answer = x.answer_a if side == "a" else x.answer_b
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
    return messages


class RecordWriter:
    """Writes records (dicts of FIELDS) to a binary stream in the format of ``suffix``, a batch at a time;
    ``close`` finishes the file (a JSON list's end, Parquet's footer)."""

    def __init__(self, stream: BinaryIO, suffix: str) -> None:
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}, not {suffix!r}")
        self.stream = stream
        self.suffix = suffix
        self.count = 0
        self._table_writer: Any = None

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self.suffix == ".json":
            for record in records:
                self.stream.write(b"[\n" if self.count == 0 else b",\n")
                self.stream.write(_json_line(record))
                self.count += 1
            return
        if self.suffix == ".jsonl":
            for record in records:
                self.stream.write(_json_line(record) + b"\n")
            self.count += len(records)
            return
        if not records:
            return
        self._tables().write_table(self._table(records))
        self.count += len(records)

    def close(self) -> None:
        if self.suffix == ".json":
            self.stream.write(b"\n]\n" if self.count else b"[]\n")
        elif self.suffix in (".csv", ".parquet"):
            self._tables().close()

    def _tables(self) -> Any:
        if self._table_writer is None:
            if self.suffix == ".csv":
                import pyarrow.csv as pcsv

                self._table_writer = pcsv.CSVWriter(self.stream, CSV_SCHEMA)
            else:
                import pyarrow.parquet as pq

                self._table_writer = pq.ParquetWriter(self.stream, PARQUET_SCHEMA, compression="zstd")
        return self._table_writer

    def _table(self, records: Sequence[Mapping[str, Any]]) -> pa.Table:
        if self.suffix == ".parquet":
            return pa.Table.from_pylist([dict(r) for r in records], schema=PARQUET_SCHEMA)
        as_text = [
            {
                **r,
                **{
                    f: None if r[f] is None else json.dumps(r[f], ensure_ascii=False)
                    for f in ("conversation_a", "conversation_b")
                },
            }
            for r in records
        ]
        return pa.Table.from_pylist(as_text, schema=CSV_SCHEMA)


def _json_line(record: Mapping[str, Any]) -> bytes:
    return json.dumps({f: record[f] for f in FIELDS}, ensure_ascii=False).encode()


def records_bytes(batches: Iterator[Sequence[Mapping[str, Any]]], suffix: str) -> tuple[bytes, int]:
    """The records of ``batches`` as one file's bytes (what publishing puts in the dataset), and how many."""
    buffer = io.BytesIO()
    writer = RecordWriter(buffer, suffix)
    for batch in batches:
        writer.write(batch)
    writer.close()
    return buffer.getvalue(), writer.count
