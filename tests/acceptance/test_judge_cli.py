"""`leaderboard judge score` as people run it: the real command in a subprocess, in the folder of the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backend.judged.annotations import MAX_FILE_BYTES, MAX_RECORDS, MAX_TEXT_CHARS
from tests.commands import clean_env
from tests.judged_data import make_records, write_table


def judge(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "judge", "score", *args],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _record(**fields: Any) -> dict[str, Any]:
    return {
        "instruction": "q",
        "output_1": "reference answer",
        "generator_1": "gpt4_1106_preview",
        "output_2": "model answer",
        "generator_2": "my-model",
        "preference": 1.5,
    } | fields


def test_score_prints_alpaca_evals_metrics_as_json(tmp_path):
    records = [_record(preference=p, output_2="x" * (i + 1)) for i, p in enumerate([1, 2, 1.5, 0])]
    (tmp_path / "annotations.json").write_text(json.dumps(records), encoding="utf-8")
    result = judge(tmp_path, "annotations.json", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["win_rate"] == pytest.approx(50.0, abs=1e-12)
    assert (metrics["n_wins"], metrics["n_wins_base"], metrics["n_draws"], metrics["n_total"]) == (1, 1, 2, 4)
    assert metrics["discrete_win_rate"] == pytest.approx(50.0, abs=1e-12)
    assert metrics["avg_length"] == 2
    # Four records are too few for the GLM's 5-fold cross-validation: said, not made up.
    assert metrics["length_controlled_winrate"] is None and metrics["lc_standard_error"] is None
    assert metrics["length_controlled_note"].startswith("not computed: ")


def test_score_names_the_glm_it_fitted(tmp_path):
    records = make_records(3, 80, "length_biased")
    (tmp_path / "annotations.json").write_text(json.dumps(records), encoding="utf-8")
    write_table(tmp_path / "df_gamed.csv", n_instructions=80)

    fallback = judge(tmp_path, "annotations.json", "--json")
    assert fallback.returncode == 0, fallback.stderr
    fallback_metrics = json.loads(fallback.stdout)
    assert fallback_metrics["length_controlled_glm"] == "length_controlled_minimal"
    assert fallback_metrics["length_controlled_note"].startswith("fallback, not AlpacaEval 2's published")

    v1 = judge(tmp_path, "annotations.json", "--glm-table", "df_gamed.csv", "--json")
    assert v1.returncode == 0, v1.stderr
    v1_metrics = json.loads(v1.stdout)
    assert v1_metrics["length_controlled_glm"] == "length_controlled_v1"
    assert v1_metrics["length_controlled_winrate"] != fallback_metrics["length_controlled_winrate"]
    assert v1_metrics["win_rate"] == fallback_metrics["win_rate"]

    text = judge(tmp_path, "annotations.json")
    assert text.returncode == 0, text.stderr
    assert "my-model against gpt4_1106_preview" in text.stdout
    for key in (
        "win_rate",
        "standard_error",
        "n_wins_base",
        "length_controlled_winrate",
        "lc_standard_error",
    ):
        assert key in text.stdout
    assert f"{fallback_metrics['win_rate']:.4f}" in text.stdout
    assert "length control: fallback, not AlpacaEval 2's published" in text.stdout


def _huge(folder: Path) -> None:
    with (folder / "bad.json").open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used, and never read


BAD_FILES = {
    "not JSON": ("this is not json", "not valid JSON"),
    "not a list": ('{"records": []}', "a JSON object, not a list of records"),
    "no output_2": (
        lambda: json.dumps([_record(), {k: v for k, v in _record().items() if k != "output_2"}]),
        "record 1 (counting from 0) has no output_2",
    ),
    "preference abc": (
        lambda: json.dumps([_record(preference="abc")]),
        "preference is the string 'abc', not a number",
    ),
    "preference 3.0": (lambda: json.dumps([_record(preference=3.0)]), "preference is the number 3.0"),
    "too many records": (
        lambda: json.dumps([_record()] * (MAX_RECORDS + 1)),
        f"{MAX_RECORDS + 1} records, more than the",
    ),
    "output too long": (
        lambda: json.dumps([_record(output_2="x" * (MAX_TEXT_CHARS + 1))]),
        f"output_2 has {MAX_TEXT_CHARS + 1} characters",
    ),
    "huge file": (_huge, "larger than 256 MiB"),
    "no file": (None, "no such file"),
}


@pytest.mark.parametrize(("content", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_one_line_naming_the_problem_and_the_fix(tmp_path, content, expected):
    if content is _huge:
        _huge(tmp_path)
    elif content is not None:
        text = content() if callable(content) else content
        (tmp_path / "bad.json").write_text(text, encoding="utf-8")
    result = judge(tmp_path, "bad.json", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error [annotations_invalid]: bad.json: ")
    assert expected in lines[0] and "Fix: " in lines[0]
    assert "Traceback" not in result.stderr
    assert str(tmp_path) not in result.stderr and "site-packages" not in result.stderr


def test_a_bad_glm_table_is_one_line(tmp_path):
    records = make_records(5, 10, "uniform")
    (tmp_path / "annotations.json").write_text(json.dumps(records), encoding="utf-8")
    (tmp_path / "df_gamed.csv").write_text("index,preference\n0,0.5\n", encoding="utf-8")
    result = judge(tmp_path, "annotations.json", "--glm-table", "df_gamed.csv")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error [glm_table_invalid]: df_gamed.csv: no column instruction_difficulty"
    )
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
