"""Battle records with conversations: every optional field typed and size-checked with the record, the field
and the fix named; the four formats written and read back alike; the import key of identical records."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from backend.arena.records import (
    FIELDS,
    MAX_CONTENT_CHARS,
    BattleRecord,
    Exchange,
    Occurrences,
    RecordWriter,
    conversation,
    parse_extras,
    raw_records,
    records_bytes,
)
from backend.errors import BattlesInvalid

TALK_A = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]
TALK_B = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hey."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "Four."},
]
BASE = {"model_a": "m-a", "model_b": "m-b", "winner": "model_a"}


def test_a_full_record_is_read_into_its_turns() -> None:
    extras = parse_extras(
        {**BASE, "anony": False, "tstamp": 1700000000, "turn": 2, "question_id": "q1", "judge": "x",
         "conversation_a": TALK_A, "conversation_b": TALK_B},
        "f", "record 0",
    )  # fmt: skip
    assert (extras.anony, extras.tstamp, extras.turn, extras.question_id) == (False, 1.7e9, 2, "q1")
    assert extras.system == "Be brief."
    assert extras.exchanges == (Exchange("Hi", "Hello!", "Hey."), Exchange("2+2?", "4", "Four."))
    bare = parse_extras(dict(BASE), "f", "record 0")
    assert (bare.anony, bare.tstamp, bare.turn, bare.question_id, bare.exchanges) == (None,) * 5


def _long() -> list[dict[str, str]]:
    return [{"role": "user", "content": "x" * (MAX_CONTENT_CHARS + 1)}]


REFUSALS: list[tuple[dict[str, Any], str, str]] = [
    ({"anony": "yes"}, "anony is 'yes', not true or false", "write anony as true"),
    ({"anony": 1}, "anony is a int", "write anony as true"),
    ({"tstamp": "noon"}, "tstamp is 'noon', not a number", "Unix time in seconds"),
    ({"tstamp": -5}, "tstamp is -5, outside 1970 to 3000", "Unix time"),
    ({"tstamp": float("nan")}, "tstamp is a float, not a number", "Unix time"),
    ({"turn": 0}, "turn is 0, outside 1 to 100", "battles of 1 to 100 turns"),
    ({"turn": True}, "turn is a bool, not a whole number", "number of user turns"),
    ({"turn": 1.5}, "turn is a float", "number of user turns"),
    ({"question_id": "q" * 201}, "question_id has 201 characters, over 200", "shorten question_id"),
    ({"question_id": 7}, "question_id is a int, not a string", "as a string"),
    ({"model_a": "a\x00b"}, "model_a contains a NUL character", "remove it"),
    ({"conversation_a": "hi", "conversation_b": TALK_B}, "conversation_a is a str, not a list", "{role, content}"),
    ({"conversation_a": "[oops", "conversation_b": TALK_B}, "conversation_a is not valid JSON", "{role, content}"),
    ({"conversation_a": {"role": "user"}, "conversation_b": TALK_B}, "conversation_a is a dict, not a list",
     "{role, content}"),
    ({"conversation_a": [{"role": "bot", "content": "x"}], "conversation_b": TALK_B},
     "conversation_a[0].role is 'bot'", "user, assistant, system"),
    ({"conversation_a": [{"role": "user", "content": None}], "conversation_b": TALK_B},
     "conversation_a[0].content is a null, not a string", "its text as content"),
    ({"conversation_a": _long(), "conversation_b": _long()}, "conversation_a[0].content has 200,001 characters",
     "leave out the battles"),
    ({"conversation_a": [{"role": "assistant", "content": "x"}], "conversation_b": TALK_B},
     "conversation_a[0].role is assistant where system or user comes", "then user and assistant in turn"),
    ({"conversation_a": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
      "conversation_b": TALK_B}, "conversation_a[1].role is user where assistant comes", "in turn"),
    ({"conversation_a": TALK_A}, "conversation_b is missing while the other side has one", "both"),
    ({"conversation_a": TALK_A, "conversation_b": [{"role": "user", "content": "Other"}]},
     "conversation_b has another system message", "same system message"),
    ({"conversation_a": TALK_A[1:], "conversation_b": [{"role": "user", "content": "Other"}]},
     "conversation_b asks other user prompts than conversation_a", "same user messages"),
    ({"conversation_a": [TALK_A[0]], "conversation_b": [TALK_B[0]]}, "conversation_a has no user message",
     "{role, content}"),
    ({"turn": 3, "conversation_a": TALK_A, "conversation_b": TALK_B},
     "turn is 3, but the conversations have 2 user turn(s)", "make turn the number of user messages"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "problem", "fix"), REFUSALS)
def test_each_refusal_names_the_record_the_field_and_the_fix(
    fields: dict[str, Any], problem: str, fix: str
) -> None:
    with pytest.raises(BattlesInvalid) as refused:
        parse_extras({**BASE, **fields}, "battles.jsonl", "line 7")
    assert refused.value.source == "battles.jsonl"
    assert refused.value.problem.startswith(f"line 7: {problem}"), refused.value.problem
    assert fix in refused.value.fix


def test_csv_cells_are_text_and_an_empty_cell_is_absent(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "model_a,model_b,winner,anony,tstamp,turn,conversation_a,conversation_b\n"
        'a,b,tie,true,1700000000.5,2,"' + json.dumps(TALK_A).replace('"', '""') + '","'
        + json.dumps(TALK_B).replace('"', '""') + '"\n'
        "a,b,tie,,,,,\n"
        "a,b,tie,maybe,,,,\n"
    )  # fmt: skip
    rows = list(raw_records(path, "b.csv"))
    full = parse_extras(rows[0][1], "b.csv", rows[0][0])
    assert (full.anony, full.tstamp, full.turn, len(full.exchanges or ())) == (True, 1700000000.5, 2, 2)
    empty = parse_extras(rows[1][1], "b.csv", rows[1][0])
    assert (empty.anony, empty.tstamp, empty.turn, empty.exchanges) == (None, None, None, None)
    with pytest.raises(BattlesInvalid, match=r"row 2 \(counted from 0, after the header\): anony is 'maybe'"):
        parse_extras(rows[2][1], "b.csv", rows[2][0])


def _record(**extras: Any) -> dict[str, Any]:
    base = {f: None for f in FIELDS}
    return {**base, **BASE, "turn": 1, "anony": True, "tstamp": 1.5e9, "mode": "live", **extras}


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_written_records_read_back_the_same_in_every_format(tmp_path: Path, suffix: str) -> None:
    records = [
        _record(question_id="arena-1", turn=2, conversation_a=TALK_A[1:], conversation_b=TALK_B[1:]),
        _record(question_id="arena-2", winner="tie (bothbad)", anony=False),
        _record(question_id="arena-3", conversation_a=[{"role": "user", "content": 'quote " and\nline'}],
                conversation_b=[{"role": "user", "content": 'quote " and\nline'}]),
    ]  # fmt: skip
    path = tmp_path / f"battles{suffix}"
    with path.open("wb") as stream:
        writer = RecordWriter(stream, suffix)
        writer.write(records[:1])
        writer.write([])
        writer.write(records[1:])
        writer.close()
    assert writer.count == 3
    read = [parse_extras(raw, path.name, label) for label, raw in raw_records(path, path.name)]
    assert [r.question_id for r in read] == ["arena-1", "arena-2", "arena-3"]
    assert read[0].exchanges == (Exchange("Hi", "Hello!", "Hey."), Exchange("2+2?", "4", "Four."))
    assert read[1].exchanges is None and read[1].anony is False
    assert read[2].exchanges == (Exchange('quote " and\nline', None, None),)
    keys = [
        Occurrences().key(BattleRecord("m-a", "m-b", r["winner"], e))
        for r, e in zip(records, read, strict=True)
    ]
    json_read = [parse_extras(r, "x", "record") for r in records]
    assert keys == [
        Occurrences().key(BattleRecord("m-a", "m-b", r["winner"], e))
        for r, e in zip(records, json_read, strict=True)
    ]  # the same battle has the same key whatever the format


def test_an_empty_export_is_a_valid_file_in_every_format() -> None:
    assert records_bytes(iter([]), ".json") == (b"[]\n", 0)
    assert records_bytes(iter([]), ".jsonl") == (b"", 0)
    data, count = records_bytes(iter([[_record()]]), ".parquet")
    table = pq.read_table(io.BytesIO(data))
    assert count == 1 and table.column_names == list(FIELDS)


def test_identical_records_get_their_occurrence_in_the_key() -> None:
    record = BattleRecord("a", "b", "tie", parse_extras({}, "f", "record 0"))
    counter = Occurrences()
    keys = [counter.key(record) for _ in range(3)]
    assert len(set(keys)) == 3
    assert [Occurrences().key(record) for _ in range(1)] == keys[:1]  # the same file gives the same keys
    assert all(len(k) == 64 for k in keys)


def test_a_stored_conversation_reads_back_as_messages() -> None:
    turns = [Exchange("Hi", "Hello", None)]
    assert conversation(turns, "a") == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert conversation(turns, "b") == [{"role": "user", "content": "Hi"}]
    assert conversation([Exchange("", None, None)] * 2, "a") is None  # stored without its conversation
