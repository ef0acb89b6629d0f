"""`leaderboard judge import`: AlpacaEval's results folders become a judged leaderboard's evaluations, scored
from their annotations; the judged table is served, published in its own folder and loads with datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.app import App
from backend.cli.main import cli
from backend.judged.annotations import parse_annotations
from backend.judged.glm import read_glm_table
from backend.judged.score import score
from backend.leaderboards.config import load_leaderboard
from backend.publish.targets import LocalFolderTarget
from backend.services.judged import joint_difficulty
from backend.services.judged_import import JudgedImportService
from backend.services.leaderboard import Query
from backend.settings import get_settings

from ..judged_data import make_records, write_table


def _results_folder(root: Path) -> Path:
    """AlpacaEval's results/ layout: two judged models, one folder without this annotator's annotations."""
    results = root / "results"
    for seed, model in ((1, "Model-A-Chat"), (2, "model_b.v2")):
        folder = results / model / "weighted_alpaca_eval_gpt4_turbo"
        folder.mkdir(parents=True)
        records = make_records(seed, 40, "length_biased", model)
        (folder / "annotations.json").write_text(json.dumps(records))
        outputs = [
            {"instruction": r["instruction"], "output": r["output_2"], "generator": model, "dataset": "x"}
            for r in records
        ]
        (results / model / "model_outputs.json").write_text(json.dumps(outputs))
    (results / "only-outputs").mkdir()
    (results / "only-outputs" / "model_outputs.json").write_text("[]")
    return results


def test_import_scores_publishes_and_loads(judged_app: App, tmp_path: Path) -> None:
    import datasets

    config = load_leaderboard("alpaca_eval_2")
    results = _results_folder(tmp_path)
    table_file = write_table(tmp_path / "df_gamed.csv", 40)
    service = JudgedImportService(
        judged_app.requests, judged_app.evaluations, judged_app.clock, tmp_path / "work"
    )
    report = service.import_folder(config, results, table_file)  # type: ignore[arg-type]
    assert report.imported == ["alpaca_eval/Model-A-Chat", "alpaca_eval/model_b.v2"]
    assert [name for name, _ in report.skipped] == ["only-outputs"]
    assert "not judged by this leaderboard's annotator" in report.skipped[0][1]

    # Scored here, exactly as `leaderboard judge score` scores the same file.
    annotations = results / "Model-A-Chat" / "weighted_alpaca_eval_gpt4_turbo" / "annotations.json"
    expected = score(parse_annotations(annotations.read_bytes(), "a"), read_glm_table(table_file)).as_dict()
    board = judged_app.leaderboards["alpaca_eval_2"]
    rows = {row["name"]: row for row in board.rows()}
    assert set(rows) == {"Model-A-Chat", "model_b.v2"}
    row = rows["Model-A-Chat"]
    for key in (
        "win_rate",
        "standard_error",
        "length_controlled_winrate",
        "lc_standard_error",
        "discrete_win_rate",
    ):
        assert row[key] == pytest.approx(expected[key], abs=1e-12)
    assert (row["n_wins"], row["n_total"], row["avg_length"]) == (
        expected["n_wins"],
        expected["n_total"],
        expected["avg_length"],
    )
    assert row["Length-controlled GLM"] == "length_controlled_v1"
    total, ranked = board.query(Query(sort="length_controlled_winrate"), 10, 0)
    assert total == 2 and ranked[0]["length_controlled_winrate"] >= ranked[1]["length_controlled_winrate"]
    assert judged_app.leaderboard.rows() == []  # imported models have no benchmark result

    # Their own instruction set's difficulty, jointly over the leaderboard's models.
    fit = joint_difficulty(board, rounds=10, seed=1)
    assert {e.model for e in fit.models} == {"alpaca_eval/Model-A-Chat", "alpaca_eval/model_b.v2"}
    assert len(fit.difficulties) == 40 and all(e.standard_error is not None for e in fit.models)
    assert all(1 <= e.rank[0] <= e.rank[1] <= 2 for e in fit.models)

    again = service.import_folder(config, results, table_file)  # type: ignore[arg-type]
    assert again.imported == [] and again.already == report.imported

    # The API lists both leaderboards and serves the judged table; its page shows it, ranked.
    with TestClient(create_api(judged_app)) as http:
        listing = http.get("/api/leaderboards").json()
        assert [(b["name"], b["kind"], b["sort"]) for b in listing] == [
            ("open_llm_v2", "benchmark", "Average ⬆️"),
            ("alpaca_eval_2", "judged", "length_controlled_winrate"),
        ]
        page = http.get("/api/leaderboards/alpaca_eval_2", params={"sort": "win_rate", "order": "asc"}).json()
        assert page["total"] == 2 and page["columns"][:3] == [
            "name",
            "length_controlled_winrate",
            "lc_standard_error",
        ]
        assert [r["win_rate"] for r in page["rows"]] == sorted(r["win_rate"] for r in page["rows"])
        assert http.get("/api/leaderboards/alpaca_eval_2", params={"sort": "nope"}).status_code == 422
        assert http.get("/api/leaderboards/nope").json()["error"]["code"] == "leaderboard_not_found"
        html = http.get("/leaderboards/alpaca_eval_2").text
        assert "alpaca_eval/Model-A-Chat" in html and "length_controlled_winrate" in html
        assert 'href="/requests/' in html and 'aria-current="page"' in html
        assert http.get("/leaderboards/alpaca_eval_2", params={"sort": "nope"}).status_code == 400
        assert http.get("/leaderboards/nope").status_code == 404

    folder = tmp_path / "published"
    published = judged_app.publishing.publish(LocalFolderTarget(folder))
    assert published.published == 2
    base = folder / "judged" / "alpaca_eval_2"
    assert (base / "results" / "alpaca_eval__Model-A-Chat" / "model_outputs.json").is_file()
    copied = (
        base
        / "results"
        / "alpaca_eval__Model-A-Chat"
        / "weighted_alpaca_eval_gpt4_turbo"
        / "annotations.json"
    )
    assert copied.read_bytes() == annotations.read_bytes()
    loaded = datasets.load_dataset(str(folder), "alpaca_eval_2", split="train")
    assert loaded.column_names[:11] == ["name", *config.columns]  # type: ignore[union-attr]
    assert {r["name"] for r in loaded} == {"Model-A-Chat", "model_b.v2"}
    assert judged_app.publishing.publish(LocalFolderTarget(folder)).published == 0


def test_a_foreign_reference_or_broken_file_is_skipped_with_the_reason(
    judged_app: App, tmp_path: Path
) -> None:
    config = load_leaderboard("alpaca_eval_2")
    folder = tmp_path / "results" / "other" / "weighted_alpaca_eval_gpt4_turbo"
    folder.mkdir(parents=True)
    records = make_records(3, 10, "uniform", "other")
    for r in records:
        r["generator_1"] = "text_davinci_003"
    (folder / "annotations.json").write_text(json.dumps(records))
    broken = tmp_path / "results" / "broken" / "weighted_alpaca_eval_gpt4_turbo"
    broken.mkdir(parents=True)
    (broken / "annotations.json").write_text('[{"instruction": 1}]')
    service = JudgedImportService(
        judged_app.requests, judged_app.evaluations, judged_app.clock, tmp_path / "work"
    )
    report = service.import_folder(config, tmp_path / "results", None)  # type: ignore[arg-type]
    reasons = dict(report.skipped)
    assert report.imported == []
    assert "text_davinci_003" in reasons["other"] and "reference is gpt4_1106_preview" in reasons["other"]
    assert "broken" in reasons and str(tmp_path) not in reasons["broken"]


def test_the_cli_imports_and_reports(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADERBOARD_DATABASE_URL", database_url)
    monkeypatch.setenv("LEADERBOARD_WORK_DIR", str(tmp_path / "work"))
    results = _results_folder(tmp_path)
    out = CliRunner().invoke(cli, ["judge", "import", str(results / "Model-A-Chat"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["imported"] == ["alpaca_eval/Model-A-Chat"] and report["leaderboard"] == "alpaca_eval_2"
    out = CliRunner().invoke(cli, ["judge", "import", str(tmp_path / "nowhere")])
    assert out.exit_code != 0 and "not a folder" in out.output
    out = CliRunner().invoke(cli, ["judge", "import", str(results), "--json"])
    assert json.loads(out.output)["imported"] == ["alpaca_eval/model_b.v2"]
    monkeypatch.setenv("LEADERBOARD_JUDGED", "alpaca_eval_2")
    get_settings.cache_clear()
    out = CliRunner().invoke(
        cli, ["judge", "difficulty", "--leaderboard", "alpaca_eval_2", "--bootstrap", "5", "--json"]
    )
    assert out.exit_code == 0, out.output
    fit = json.loads(out.output)
    assert len(fit["models"]) == 2 and fit["rounds"] == 5
    out = CliRunner().invoke(cli, ["judge", "difficulty", "--leaderboard", "open_llm_v2"])
    assert out.exit_code != 0 and "not a judged leaderboard" in out.output


@pytest.mark.parametrize(
    ("judged", "message"),
    [("open_llm_v2", "not a judged leaderboard"), ("nope", "no leaderboard config named 'nope'")],
)
def test_a_bad_judged_setting_stops_the_worker_before_it_claims(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judged: str, message: str
) -> None:
    monkeypatch.setenv("LEADERBOARD_DATABASE_URL", database_url)
    monkeypatch.setenv("LEADERBOARD_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LEADERBOARD_JUDGED", judged)
    get_settings.cache_clear()
    out = CliRunner().invoke(cli, ["worker", "--once"])
    assert out.exit_code == 1 and message in out.output
