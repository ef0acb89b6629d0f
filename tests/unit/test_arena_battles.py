"""Reading arena battles in each format (the public Chatbot Arena's records), refusing bad ones with the
record, the field and the fix, and `leaderboard arena ratings` over each format."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from backend.arena.battles import A_WINS, B_WINS, TIE, Battles, read_battles
from backend.cli.main import cli
from backend.errors import BattlesInvalid

RECORDS = [
    {"model_a": "gpt-4", "model_b": "llama-2-7b", "winner": "model_a", "judge": "u1", "turn": 1, "anony": True,
     "language": "English", "tstamp": 1700000000.5, "conversation_a": [{"role": "user", "content": "hi"}]},
    {"model_a": "llama-2-7b", "model_b": "claude", "winner": "tie", "judge": "u2", "turn": 2, "anony": False,
     "language": "German", "tstamp": 1700000001},
    {"model_a": "claude", "model_b": "gpt-4", "winner": "tie (bothbad)", "anony": True},
    {"model_a": "claude", "model_b": "llama-2-7b", "winner": "model_b", "question_id": "q4"},
    {"model_a": "gpt-4", "model_b": "claude", "winner": "model_b"},
]  # fmt: skip
COLUMNS = ("model_a", "model_b", "winner")


def _write(folder: Path, suffix: str, records: list[dict]) -> Path:
    path = folder / f"battles{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n", encoding="utf-8")
    else:
        flat = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in records]
        keys = sorted({k for r in flat for k in r})
        table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in flat])
        if suffix == ".csv":
            pcsv.write_csv(table, path)
        else:
            pq.write_table(table, path)
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_every_format_reads_the_same_battles(tmp_path, suffix):
    battles = read_battles(_write(tmp_path, suffix, RECORDS))
    assert battles.models == ("claude", "gpt-4", "llama-2-7b")
    assert battles.model_a.tolist() == [1, 2, 0, 0, 1]
    assert battles.model_b.tolist() == [2, 0, 1, 2, 0]
    assert battles.outcome.tolist() == [A_WINS, TIE, TIE, B_WINS, B_WINS]
    assert battles.per_model().tolist() == [4, 3, 3]
    assert len(battles) == 5


def _refused(tmp_path: Path, suffix: str, records: list | dict | str) -> str:
    if isinstance(records, str):
        path = tmp_path / f"battles{suffix}"
        path.write_text(records, encoding="utf-8")
    else:
        path = _write(tmp_path, suffix, records)  # type: ignore[arg-type]
    with pytest.raises(BattlesInvalid) as caught:
        read_battles(path)
    assert "Fix: " in caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"winner": "model_c"}, "record 3: winner is 'model_c'"),
        ({"winner": None}, "record 3: winner is missing"),
        ({"model_b": 7}, "record 3: model_b is a int, not a string"),
        ({"model_a": "x" * 257}, "record 3: model_a is 257 characters long"),
        ({"model_a": ""}, "record 3: model_a is empty"),
        ({"model_b": "claude"}, "record 3: claude battles itself"),
        ({"anony": "yes"}, "record 3: anony is a str, not bool"),
        ({"turn": True}, "record 3: turn is a bool, not int"),
        ({"tstamp": "noon"}, "record 3: tstamp is a str, not int or float"),
        ({"judge": "j" * 2000}, "record 3: judge has 2,000 characters"),
    ],
)
def test_a_bad_record_is_refused_with_its_index_the_field_and_the_fix(tmp_path, change, expected):
    records = [dict(r) for r in RECORDS]
    records[3].update(change)
    assert expected in _refused(tmp_path, ".json", records)


def test_json_lines_name_the_line(tmp_path):
    path = tmp_path / "battles.jsonl"
    lines = [json.dumps(r) for r in RECORDS[:2]] + ["", json.dumps({**RECORDS[2], "winner": "both"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BattlesInvalid, match="line 4: winner is 'both'"):
        read_battles(path)
    path.write_text('{"model_a": "a"\n', encoding="utf-8")
    with pytest.raises(BattlesInvalid, match="line 1 is not valid JSON"):
        read_battles(path)


def test_columnar_files_name_the_row_and_the_column(tmp_path):
    records = [{k: r[k] for k in COLUMNS} for r in RECORDS]
    records[2]["winner"] = "draw"
    assert "row 2 (counted from 0, after the header): winner is 'draw'" in _refused(tmp_path, ".csv", records)
    assert "row 2: winner is 'draw'" in _refused(tmp_path, ".parquet", records)
    no_winner = [{"model_a": r["model_a"], "model_b": r["model_b"]} for r in RECORDS]
    assert "winner" in _refused(tmp_path, ".csv", no_winner)
    assert "has no column winner" in _refused(tmp_path, ".parquet", no_winner)
    numbers = [{**r, "model_a": i} for i, r in enumerate(records)]
    assert "column model_a is of type int64" in _refused(tmp_path, ".parquet", numbers)
    typed = [{**{k: r[k] for k in COLUMNS}, "anony": "yes"} for r in RECORDS]
    assert "column anony is of type string" in _refused(tmp_path, ".parquet", typed)


def test_files_that_are_not_battles_are_refused(tmp_path):
    assert "not a list of records" in _refused(tmp_path, ".json", {"model_a": "a"})
    assert "is not valid JSON" in _refused(tmp_path, ".json", "[{")
    assert "is a int, not a record" in _refused(tmp_path, ".json", [1])
    assert "has no battles" in _refused(tmp_path, ".json", [])
    assert "cannot be read as PARQUET" in _refused(tmp_path, ".parquet", "not parquet")
    for suffix in (".txt", ""):
        message = _refused(tmp_path, suffix, "model_a,model_b,winner\n")
        assert "rename the file to end in .json" in message
    with pytest.raises(BattlesInvalid, match="cannot be read"):
        read_battles(tmp_path / "missing.json")


def test_battles_in_memory_are_checked_like_a_file():
    battles = Battles.from_records(RECORDS)
    assert battles.models == ("claude", "gpt-4", "llama-2-7b")
    with pytest.raises(BattlesInvalid, match="record 0: model_a is missing"):
        Battles.from_records([{"model_b": "a", "winner": "tie"}])


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_the_cli_rates_each_format(tmp_path, suffix):
    path = _write(tmp_path, suffix, RECORDS)
    result = CliRunner().invoke(cli, ["arena", "ratings", str(path), "--json", "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [set(row) for row in rows] == [
        {"model", "rating", "rating_lower", "rating_upper", "rank", "battles"}
    ] * 3
    assert [row["rating"] for row in rows] == sorted((row["rating"] for row in rows), reverse=True)
    assert sum(row["rating"] for row in rows) / 3 == pytest.approx(1000)
    table = CliRunner().invoke(cli, ["arena", "ratings", str(path), "--anchor", "claude=1114"])
    assert table.exit_code == 0, table.output
    assert "claude" in table.stdout and "1114.0" in table.stdout


def test_the_cli_prints_warnings_on_stderr_and_refuses_bad_input_without_a_traceback(tmp_path):
    apart = [
        {"model_a": "a", "model_b": "b", "winner": "model_a"},
        {"model_a": "b", "model_b": "a", "winner": "model_a"},
        {"model_a": "c", "model_b": "d", "winner": "tie"},
    ]
    path = _write(tmp_path, ".json", apart)
    result = CliRunner().invoke(cli, ["arena", "ratings", str(path), "--json", "--bootstrap", "0"])
    assert result.exit_code == 0
    assert "warning: the battle graph is not connected" in result.stderr
    assert json.loads(result.stdout)[0]["rating_lower"] is None
    bad = _write(tmp_path, ".jsonl", [{"model_a": "a", "model_b": "a", "winner": "tie"}])
    refused = CliRunner().invoke(cli, ["arena", "ratings", str(bad)])
    assert refused.exit_code == 1
    assert (
        refused.stderr.startswith("error [battles_invalid]: ")
        and "line 1: a battles itself" in refused.stderr
    )
    assert "Traceback" not in refused.output
    for anchor in ("claude", "nobody=1000", "a=high"):
        wrong = CliRunner().invoke(cli, ["arena", "ratings", str(path), "--anchor", anchor])
        assert wrong.exit_code == 1 and wrong.stderr.startswith("error [invalid_input]: "), anchor
