"""`leaderboard judge score`'s metrics: alpaca-eval 0.6.6's own evaluate() on the same annotations gives the
same numbers (to 1e-9), on generated annotation sets and on cases worked out by hand; a bad file is an
error naming the record, the field and the fix."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.errors import AnnotationsInvalid, GlmTableInvalid
from backend.judged import annotations as annotations_module
from backend.judged.annotations import MAX_RECORDS, MAX_TEXT_CHARS, parse_annotations, read_annotations
from backend.judged.glm import GLM_MINIMAL, GLM_V1, read_glm_table
from backend.judged.score import score
from tests import alpaca_eval_reference
from tests.judged_data import make_records, write_annotations, write_table

ALPACA_EVAL_KEYS = (
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
)
LC_KEYS = ("length_controlled_winrate", "lc_standard_error")
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def alpaca_eval():
    return alpaca_eval_reference.import_alpaca_eval()


def assert_agrees(ours: dict[str, Any], reference: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        expected = reference[key]
        if isinstance(expected, float) and math.isnan(expected):
            assert ours[key] is None, key  # alpaca-eval's NaN: not defined (null in JSON)
        elif key.startswith("n_") or key == "avg_length":
            assert ours[key] == int(expected) and isinstance(ours[key], int), key
        else:
            assert ours[key] is not None and abs(ours[key] - float(expected)) <= TOLERANCE, (
                key,
                ours[key],
                expected,
            )


def ours_from_file(path: Path, table: Path | None = None) -> dict[str, Any]:
    return score(read_annotations(path), read_glm_table(table) if table else None).as_dict()


# ------------------------------------------------------------------------------- agreement with alpaca-eval


@pytest.mark.parametrize(
    ("kind", "n", "seed"),
    [("uniform", 300, 1), ("draws", 250, 2), ("missing", 200, 3), ("length_biased", 300, 4), ("draws", 7, 5)],
)
def test_win_rates_and_avg_length_agree_with_alpaca_eval(alpaca_eval, tmp_path, kind, n, seed):
    records = make_records(seed, n, kind)
    path = write_annotations(tmp_path / "annotations.json", records)
    reference = alpaca_eval_reference.evaluate(alpaca_eval, json.loads(path.read_text(encoding="utf-8")))
    ours = ours_from_file(path)
    assert_agrees(ours, reference, ALPACA_EVAL_KEYS)
    assert ours["n_records"] == n
    assert ours["n_missing_preferences"] == n - ours["n_total"]


@pytest.mark.parametrize(
    ("kind", "n", "seed"), [("length_biased", 160, 11), ("missing", 160, 12), ("draws", 160, 13)]
)
def test_length_controlled_v1_agrees_with_alpaca_eval_given_the_table(alpaca_eval, tmp_path, kind, n, seed):
    table = write_table(tmp_path / "df_gamed.csv", n_instructions=n)
    path = write_annotations(tmp_path / "annotations.json", make_records(seed, n, kind))
    records = json.loads(path.read_text(encoding="utf-8"))
    reference = alpaca_eval_reference.evaluate(alpaca_eval, records, glm_name=GLM_V1, table=table)
    ours = ours_from_file(path, table)
    assert_agrees(ours, reference, ALPACA_EVAL_KEYS + LC_KEYS)
    assert ours["length_controlled_glm"] == GLM_V1
    assert "published length-controlled win rate" in ours["length_controlled_note"]
    assert "matched by position" not in ours["length_controlled_note"]
    # The GLM moved the number: the check is not one of two constant predictions.
    assert abs(ours["length_controlled_winrate"] - ours["win_rate"]) > 0.5


def test_length_controlled_v1_on_fewer_records_than_instructions_matches_by_position(alpaca_eval, tmp_path):
    """alpaca-eval gives record i the difficulty of instruction i; a shorter file is said to be matched so."""
    table = write_table(tmp_path / "df_gamed.csv", n_instructions=120, index_column=True)
    path = write_annotations(tmp_path / "annotations.json", make_records(21, 90, "length_biased"))
    records = json.loads(path.read_text(encoding="utf-8"))
    reference = alpaca_eval_reference.evaluate(alpaca_eval, records, glm_name=GLM_V1, table=table)
    ours = ours_from_file(path, table)
    assert_agrees(ours, reference, ALPACA_EVAL_KEYS + LC_KEYS)
    assert (
        "the table describes 120 instructions and the file has 90 records" in ours["length_controlled_note"]
    )


@pytest.mark.parametrize(("kind", "seed"), [("length_biased", 31), ("missing", 32), ("uniform", 33)])
def test_the_fallback_is_alpaca_evals_length_controlled_minimal(alpaca_eval, tmp_path, kind, seed):
    """Without a table our fallback is alpaca-eval's own reduced GLM: alpaca-eval (which needs some
    df_gamed.csv to run at all, and does not use it in this GLM) gives the same numbers."""
    path = write_annotations(tmp_path / "annotations.json", make_records(seed, 150, kind))
    records = json.loads(path.read_text(encoding="utf-8"))
    any_table = write_table(tmp_path / "df_gamed.csv", n_instructions=150, seed=99)
    reference = alpaca_eval_reference.evaluate(alpaca_eval, records, glm_name=GLM_MINIMAL, table=any_table)
    ours = ours_from_file(path)
    assert_agrees(ours, reference, ALPACA_EVAL_KEYS + LC_KEYS)
    assert ours["length_controlled_glm"] == GLM_MINIMAL
    assert ours["length_controlled_note"].startswith("fallback, not AlpacaEval 2's published")
    assert "--glm-table" in ours["length_controlled_note"]


@pytest.mark.parametrize("with_table", [True, False])
def test_the_reference_against_itself_is_fifty_percent(alpaca_eval, tmp_path, with_table):
    records = make_records(41, 60, "missing", model="gpt4_1106_preview")
    path = write_annotations(tmp_path / "annotations.json", records)
    table = write_table(tmp_path / "df_gamed.csv", n_instructions=60)
    glm = GLM_V1 if with_table else GLM_MINIMAL
    reference = alpaca_eval_reference.evaluate(
        alpaca_eval, json.loads(path.read_text(encoding="utf-8")), glm_name=glm, table=table
    )
    ours = ours_from_file(path, table if with_table else None)
    assert_agrees(ours, reference, ALPACA_EVAL_KEYS + LC_KEYS)
    assert (ours["length_controlled_winrate"], ours["lc_standard_error"]) == (50.0, 0.0)


def test_too_few_judged_records_for_the_fallback_is_not_computed_where_alpaca_eval_fails(
    alpaca_eval, tmp_path
):
    records = make_records(51, 4, "uniform")
    path = write_annotations(tmp_path / "annotations.json", records)
    with pytest.raises(ValueError):  # GroupKFold: 5 splits need 5 groups
        alpaca_eval_reference.evaluate(
            alpaca_eval, records, glm_name=GLM_MINIMAL, table=write_table(tmp_path / "t.csv", 10)
        )
    ours = ours_from_file(path)
    assert ours["length_controlled_winrate"] is None and ours["lc_standard_error"] is None
    assert ours["length_controlled_glm"] is None
    assert ours["length_controlled_note"].startswith("not computed: ")
    assert ours["win_rate"] is not None  # the other metrics stand


def test_equal_length_differences_are_not_computed(tmp_path):
    """(len(output_1) - len(output_2)) / its standard deviation: no deviation, no length term."""
    records = [
        {
            "instruction": f"q{i}",
            "output_1": "a" * (10 + i),
            "output_2": "b" * (20 + i),
            "generator_1": "ref",
            "generator_2": "m",
            "preference": 1 + i / 10,
        }
        for i in range(8)
    ]
    result = ours_from_file(write_annotations(tmp_path / "a.json", records))
    assert result["length_controlled_winrate"] is None
    assert "length differences" in result["length_controlled_note"]


# ------------------------------------------------------------------------------------ worked by hand


def _records(preferences: list[Any], outputs_2: list[str] | None = None) -> bytes:
    outputs_2 = outputs_2 or ["x" * (i + 1) for i in range(len(preferences))]
    records = []
    for p, out in zip(preferences, outputs_2, strict=True):
        record: dict[str, Any] = {
            "instruction": "same instruction",
            "output_1": "reference",
            "generator_1": "ref",
            "output_2": out,
            "generator_2": "m",
        }
        if p != "absent":
            record["preference"] = p
        records.append(record)
    return json.dumps(records).encode()


def test_one_win_one_loss_two_draws_by_hand():
    """1, 2, 1.5, 0: scores 0, 1, 0.5, 0.5 (0 is a draw like 1.5)."""
    result = score(parse_annotations(_records([1, 2, 1.5, 0]), "a.json")).as_dict()
    assert result["win_rate"] == pytest.approx(50.0, abs=1e-12)
    # deviations from 0.5: -0.5, 0.5, 0, 0; sample variance (0.25 + 0.25) / 3 = 1/6; standard error
    # sqrt(1/6 / 4) = 0.2041...
    assert result["standard_error"] == pytest.approx(100 * math.sqrt(1 / 6 / 4), abs=1e-12)
    assert (result["n_wins"], result["n_wins_base"], result["n_draws"], result["n_total"]) == (1, 1, 2, 4)
    assert result["discrete_win_rate"] == pytest.approx(100 * (1 + 2 / 2) / 4, abs=1e-12)
    assert result["avg_length"] == int((1 + 2 + 3 + 4) / 4)  # 2.5 -> 2: truncated, as alpaca-eval does


def test_missing_preferences_count_nowhere_but_avg_length_by_hand():
    """null, NaN and an absent preference leave the record out of every count (alpaca-eval drops them)."""
    data = _records([1, 2, 2, None, "absent", 1.5], ["ab", "abcd", "é🙂", "x" * 10, "y" * 5, "z"])
    data = data.replace(b'"preference": null', b'"preference": NaN', 1)  # one NaN, as pandas writes it
    result = score(parse_annotations(data, "a.json")).as_dict()
    # judged: 1, 2, 2, 1.5 -> 0, 1, 1, 0.5: mean 0.625
    assert result["win_rate"] == pytest.approx(62.5, abs=1e-12)
    values = np.array([0, 1, 1, 0.5])
    assert result["standard_error"] == pytest.approx(100 * values.std(ddof=1) / 2, abs=1e-12)
    assert (result["n_wins"], result["n_wins_base"], result["n_draws"], result["n_total"]) == (2, 1, 1, 4)
    assert result["discrete_win_rate"] == pytest.approx(62.5, abs=1e-12)
    assert (result["n_records"], result["n_missing_preferences"]) == (6, 2)
    assert result["avg_length"] == int((2 + 4 + 2 + 10 + 5 + 1) / 6)  # characters, not bytes: 4


def test_weighted_preferences_round_for_the_discrete_win_rate_by_hand():
    """1.2 loses, 1.9 and 1.5000001 win (only exactly 1.5 or 0 is a draw)."""
    result = score(parse_annotations(_records([1.2, 1.9, 1.5000001]), "a.json")).as_dict()
    assert result["win_rate"] == pytest.approx(100 * (0.2 + 0.9 + 0.5000001) / 3, abs=1e-12)
    assert (result["n_wins"], result["n_wins_base"], result["n_draws"]) == (2, 1, 0)
    assert result["discrete_win_rate"] == pytest.approx(200 / 3, abs=1e-12)


def test_one_judged_record_has_no_standard_error_and_none_judged_no_win_rate():
    one = score(parse_annotations(_records([2, None]), "a.json")).as_dict()
    assert (one["win_rate"], one["standard_error"], one["n_total"]) == (100.0, None, 1)
    none = score(parse_annotations(_records([None, "absent"]), "a.json")).as_dict()
    assert none["win_rate"] is None and none["discrete_win_rate"] is None and none["n_total"] == 0
    assert json.loads(json.dumps(none, allow_nan=False)) == none  # valid JSON: no NaN anywhere


def test_the_output_has_alpaca_evals_keys_in_its_leaderboard_order():
    result = score(parse_annotations(_records([1, 2, 1.5, 0, 1.7, 1.2]), "a.json")).as_dict()
    assert tuple(result)[:10] == ALPACA_EVAL_KEYS + LC_KEYS
    assert set(result) - set(ALPACA_EVAL_KEYS + LC_KEYS) == {
        "length_controlled_glm",
        "length_controlled_note",
        "n_records",
        "n_missing_preferences",
    }


# ------------------------------------------------------------------------------------- the file's rules


def _one(**fields: Any) -> bytes:
    record = {
        "instruction": "q",
        "output_1": "a",
        "generator_1": "ref",
        "output_2": "b",
        "generator_2": "m",
        "preference": 1.5,
    }
    record.update(fields)
    return json.dumps([record, {**record, "instruction": "q2"}]).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[{", "not valid JSON"),
        (b'{"instruction": "q"}', "a JSON object, not a list of records"),
        (b"[]", "no records"),
        (b"\xff\xfe[]", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested or sized beyond"),
        (b"[1, 2]", "record 0 (counting from 0) is the number 1, not an object"),
        (_one(output_2=None), "record 0 (counting from 0): output_2 is null, not a string"),
        (_one(instruction=["q"]), "instruction is a list, not a string"),
        (_one(generator_2=""), "generator_2 is empty"),
        (_one(output_1="a" * (MAX_TEXT_CHARS + 1)), f"output_1 has {MAX_TEXT_CHARS + 1} characters"),
        (_one(preference="abc"), "preference is the string 'abc', not a number"),
        (_one(preference="1.5"), "preference is the string '1.5', not a number"),
        (_one(preference=True), "preference is the boolean true, not a number"),
        (_one(preference=3.0), "preference is the number 3.0"),
        (_one(preference=0.5), "preference is the number 0.5"),
        (_one(preference=-1), "preference is the number -1"),
        (_one(preference=10**400), "preference is the number 1000"),
        (
            b'[{"instruction": "q", "output_1": "a", "generator_1": "r", "output_2": "b", "generator_2": "m", '
            b'"preference": Infinity}]',
            "preference is the number inf",
        ),
        (
            b'[{"instruction": "q", "output_1": "a", "generator_1": "r", "output_2": "b", "generator_2": "m", '
            b'"preference": 1, "preference": 2}]',
            "has the field 'preference' more than once",
        ),
    ],
)
def test_a_bad_file_is_an_error_naming_the_problem_and_the_fix(data, expected):
    with pytest.raises(AnnotationsInvalid) as caught:
        parse_annotations(data, "given.json")
    message = caught.value.message
    assert message.startswith("given.json: ") and expected in message, message
    assert "Fix: " in message and "\n" not in message


def test_a_missing_field_names_the_record_and_the_field():
    records = json.loads(_one())
    del records[1]["output_2"]
    with pytest.raises(AnnotationsInvalid, match=r"record 1 \(counting from 0\) has no output_2"):
        parse_annotations(json.dumps(records).encode(), "a.json")


def test_two_models_or_two_references_in_one_file_are_refused():
    records = json.loads(_one())
    records[1]["generator_2"] = "other"
    with pytest.raises(AnnotationsInvalid, match="2 different generator_2"):
        parse_annotations(json.dumps(records).encode(), "a.json")
    records[1]["generator_2"], records[1]["generator_1"] = "m", "other-ref"
    with pytest.raises(AnnotationsInvalid, match="2 different generator_1"):
        parse_annotations(json.dumps(records).encode(), "a.json")


def test_what_alpaca_eval_accepts_is_accepted():
    """Integers, 0 and 1.5 draws, -0.0, extra fields, duplicate instructions, a UTF-8 BOM."""
    records = json.loads(_one(preference=2, dataset="helpful_base", raw_completion={"a": [1, {"b": None}]}))
    records[1]["preference"] = -0.0
    data = b"\xef\xbb\xbf" + json.dumps(records).encode()
    parsed = parse_annotations(data, "a.json")
    assert [r.preference for r in parsed.records] == [2.0, 0.0]
    assert parsed.generator_2 == "m" and parsed.records[0].instruction == "q"


def test_record_count_limit():
    record = json.loads(_one())[0]
    with pytest.raises(AnnotationsInvalid, match=f"{MAX_RECORDS + 1} records, more than the {MAX_RECORDS}"):
        parse_annotations(json.dumps([record] * (MAX_RECORDS + 1)).encode(), "a.json")
    assert (
        len(parse_annotations(json.dumps([record] * MAX_RECORDS).encode(), "a.json").records) == MAX_RECORDS
    )


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    with big.open("wb") as handle:  # sparse: no disk, and never read
        handle.truncate(annotations_module.MAX_FILE_BYTES + 1)
    with pytest.raises(AnnotationsInvalid, match=r"big\.json: larger than 256 MiB"):
        read_annotations(big, "big.json")
    with pytest.raises(AnnotationsInvalid, match=r"nowhere\.json: no such file"):
        read_annotations(tmp_path / "nowhere.json", "nowhere.json")
    with pytest.raises(AnnotationsInvalid, match="a folder, not a file"):
        read_annotations(tmp_path, "folder")


# ------------------------------------------------------------------------------------ the GLM table


def _table_text(**changes: str) -> bytes:
    header = ["model", "index", "instruction_difficulty", "not_gamed_baseline", "std_delta_len", "preference"]
    row = {"model": "v", "index": "0", "instruction_difficulty": "0.3", "not_gamed_baseline": "False"}
    row |= {"std_delta_len": "-1.2", "preference": "0.4"}
    row |= changes
    header = [c for c in header if c in row]
    return (",".join(header) + "\n" + ",".join(row[c] for c in header) + "\n").encode()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"std_delta_len": "abc"}, "row 2, column std_delta_len: 'abc' is not a number"),
        ({"instruction_difficulty": "inf"}, "'inf' is not a finite number"),
        ({"instruction_difficulty": ""}, "'' is not a number"),
        ({"not_gamed_baseline": "yes"}, "'yes' is not True or False"),
        ({"preference": "1.5"}, "1.5 is not a probability in [0, 1]"),
        ({"index": "1.5"}, "'1.5' is not an integer"),
    ],
)
def test_a_bad_glm_table_is_an_error(changes, expected):
    from backend.judged.glm import parse_glm_table

    with pytest.raises(GlmTableInvalid) as caught:
        parse_glm_table(_table_text(**changes), "df_gamed.csv")
    assert caught.value.message.startswith("df_gamed.csv: ") and expected in caught.value.message


def test_a_glm_table_without_a_column_or_rows_is_an_error():
    from backend.judged.glm import parse_glm_table

    with pytest.raises(GlmTableInvalid, match="no column std_delta_len"):
        parse_glm_table(
            b"index,instruction_difficulty,not_gamed_baseline,preference\n0,1,False,0.5\n", "t.csv"
        )
    with pytest.raises(GlmTableInvalid, match="no rows"):
        parse_glm_table(_table_text().splitlines(keepends=True)[0], "t.csv")
    with pytest.raises(GlmTableInvalid, match="row 2 has 2 fields"):
        parse_glm_table(_table_text().splitlines(keepends=True)[0] + b"0,1\n", "t.csv")


def test_more_records_than_the_tables_instructions_is_an_error(alpaca_eval, tmp_path):
    """alpaca-eval looks record i's difficulty up by position and fails (a KeyError) past the table."""
    table = write_table(tmp_path / "df_gamed.csv", n_instructions=20)
    records = make_records(61, 25, "uniform")
    with pytest.raises(ValueError, match="Transform function failed") as caught:  # pandas' wrapping
        alpaca_eval_reference.evaluate(alpaca_eval, records, glm_name=GLM_V1, table=table)
    assert isinstance(caught.value.__cause__, KeyError)
    path = write_annotations(tmp_path / "annotations.json", records)
    with pytest.raises(GlmTableInvalid, match="instruction difficulties for 20 instructions, and record 20"):
        score(read_annotations(path), read_glm_table(table, "df_gamed.csv"))
