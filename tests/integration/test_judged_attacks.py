"""`leaderboard judge import` against hostile or broken AlpacaEval folders: nothing is left half imported,
nothing is read through a link, and a name the table and its CSV show is a plain model name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.app import App
from backend.leaderboards.config import load_leaderboard
from backend.services.judged_import import JudgedImportService

from ..judged_data import make_records, write_table

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"


def _model(results: Path, name: str, n: int = 40, generator: str | None = None) -> Path:
    folder = results / name / ANNOTATOR
    folder.mkdir(parents=True)
    records = make_records(1, n, "length_biased", generator or name)
    (folder / "annotations.json").write_text(json.dumps(records))
    return results / name


def _import(app: App, results: Path, tmp_path: Path, table: Path | None = None):
    service = JudgedImportService(app.requests, app.evaluations, app.clock, tmp_path / "work")
    return service.import_folder(load_leaderboard("alpaca_eval_2"), results, table)  # type: ignore[arg-type]


def test_a_file_the_glm_table_cannot_score_leaves_no_request_behind(judged_app: App, tmp_path: Path) -> None:
    """Scored before anything is stored: a RUNNING request left behind would be released by the reaper and
    evaluated from the Hub as alpaca_eval/<name>, a repository anyone may create."""
    results = tmp_path / "results"
    _model(results, "too-long", n=50)
    _model(results, "fits", n=40)
    table = write_table(tmp_path / "df_gamed.csv", 40)
    report = _import(judged_app, results, tmp_path, table)
    assert report.imported == ["alpaca_eval/fits"]
    assert [name for name, _ in report.skipped] == ["too-long"]
    assert "record 40 has none" in report.skipped[0][1]
    assert [r.model for r in judged_app.requests.all()] == ["alpaca_eval/fits"]


def test_a_folder_name_ending_in_a_newline_is_not_a_model_name(judged_app: App, tmp_path: Path) -> None:
    results = tmp_path / "results"
    _model(results, "model\n")
    report = _import(judged_app, results, tmp_path)
    assert report.imported == [] and [name for name, _ in report.skipped] == ["model\n"]


@pytest.mark.parametrize(
    "generator",
    ['=HYPERLINK("http://evil","x")', "<script>alert(1)</script>", "+cmd", "model\nname"],
)
def test_a_generator_name_that_is_not_a_model_name_is_refused(
    judged_app: App, tmp_path: Path, generator: str
) -> None:
    """generator_2 becomes the table's name column (page, API, published CSV): a formula or markup there
    would run in a spreadsheet that opens the CSV."""
    results = tmp_path / "results"
    _model(results, "odd", generator=generator)
    report = _import(judged_app, results, tmp_path)
    assert report.imported == [] and [name for name, _ in report.skipped] == ["odd"]
    assert "generator_2" in report.skipped[0][1]


def test_files_are_not_read_through_links(judged_app: App, tmp_path: Path) -> None:
    """An annotator folder or a model_outputs.json that is a link to elsewhere is not copied and published."""
    outside = tmp_path / "outside"
    outside.mkdir()
    results = tmp_path / "results"
    model = _model(outside, "linked")
    (results / "linked").mkdir(parents=True)
    (results / "linked" / ANNOTATOR).symlink_to(model / ANNOTATOR)
    secret = outside / "secret.json"
    secret.write_text(json.dumps([{"instruction": "secret", "output": "secret"}]))
    other = _model(results, "outputs-linked")
    (other / "model_outputs.json").symlink_to(secret)
    report = _import(judged_app, results, tmp_path)
    assert report.imported == []
    assert sorted(name for name, _ in report.skipped) == ["linked", "outputs-linked"]
    assert all("link" in why for _, why in report.skipped)
    assert not list((tmp_path / "work").rglob("model_outputs.json"))
