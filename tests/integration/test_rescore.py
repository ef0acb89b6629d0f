"""Re-scoring stored per-sample outputs with a changed scorer, without loading any model.

One real run (a tiny model, a synthesized mirror, limit 2) produces the stored samples for the whole module;
lm_eval is imported only after the offline variables are set.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.app import App
from backend.errors import RescoreError, TaskSetError
from backend.evaluation import data, synthetic
from backend.evaluation.materialize import materialize
from backend.evaluation.rescore import Rescorer, samples_by_task
from backend.evaluation.tasks import load_task_set, tasks_folder
from backend.leaderboards.config import config_hash, load_config
from backend.leaderboards.harness_results import read_results_file
from backend.leaderboards.normalize import normalize
from backend.modelbuilder import write_tiny_model
from backend.services.rescore import RescoreService
from backend.settings import Settings
from backend.storage.evaluations import Evaluation
from tests.integration.conftest import new_request

# One worker runs the whole module under `-n 2 --dist loadgroup`: the stored run is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("rescore")]

RUN = ["leaderboard_math_hard", "leaderboard_gpqa", "leaderboard_musr"]
SCORERS = "tests.fixtures.rescore.scorers"


class Stored:
    def __init__(self, root: Path, mirror: Path, model: Path, results: dict[str, Any], files: list[Path]):
        self.root, self.mirror, self.model, self.results, self.samples_files = (
            root,
            mirror,
            model,
            results,
            files,
        )


def _task_set_with_scorer(folder: Path, prefix: str, scorer: str) -> Path:
    """The pinned manifest, with `scorer` as the process_results of every task named `prefix`*."""
    manifest = yaml.safe_load((tasks_folder() / "open_llm_v2.yaml").read_text(encoding="utf-8"))
    for task in manifest["tasks"]:
        if task["name"].startswith(prefix):
            task["process_results"] = scorer
    path = folder / f"manifest-{scorer.rsplit(':', 1)[1]}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """One real evaluation, saved as the worker saves it: a results dict and samples_<task>_<time>.jsonl."""
    root = tmp_path_factory.mktemp("rescore")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            patch.setenv(name, "1")
        patch.setenv("HF_HOME", str(root / "hf-home"))
        mirror = synthetic.synthesize(root / "mirror", rows=2)
        patch.setenv("NLTK_DATA", str(data.nltk_data_dir(mirror)))
        model = root / "model"
        write_tiny_model(model)

        import lm_eval
        from lm_eval.loggers import EvaluationTracker
        from lm_eval.tasks import TaskManager

        folder = materialize(load_task_set(), root / "run" / "tasks", mirror)
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model},dtype=float32",
            tasks=RUN,
            device="cpu",
            batch_size=1,
            limit=2,
            log_samples=True,
            gen_kwargs={"max_gen_toks": 32},
            task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        )
        assert results is not None
        samples = results.pop("samples")
        tracker = EvaluationTracker(output_path=str(root / "run" / "harness"))
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in samples:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        files = sorted((root / "run" / "harness").rglob("samples_*.jsonl"))
        (saved,) = (root / "run" / "harness").rglob("results_*.json")
        yield Stored(root, mirror, model, read_results_file(saved), files)


@pytest.fixture
def no_model(stored: Stored, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-scoring must not touch a model: its weights are gone and building any model fails loudly."""
    import transformers

    shutil.rmtree(stored.model, ignore_errors=True)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("re-scoring built a model")

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setenv("NLTK_DATA", str(data.nltk_data_dir(stored.mirror)))


def _metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if "," in k}


@pytest.mark.usefixtures("no_model")
def test_unchanged_scorers_reproduce_the_run_exactly(stored: Stored, tmp_path: Path) -> None:
    config = load_config()
    started = time.perf_counter()
    for key in ("math_hard", "gpqa", "musr"):
        rescored = Rescorer(key, config, stored.mirror, tmp_path / key).rescore(
            stored.results, stored.samples_files
        )
        assert rescored["results"] == stored.results["results"], key
        assert rescored["groups"] == stored.results["groups"], key
        assert rescored["rescored"][key]["scorers"] == {s.name: None for s in config.benchmark(key).subtasks}
    assert time.perf_counter() - started < 30

    # Naming the harness's own scorer as an override changes nothing either.
    manifest = _task_set_with_scorer(tmp_path, "leaderboard_math_", f"{SCORERS}:math_unchanged")
    unchanged = load_config(task_set=load_task_set(manifest))
    rescored = Rescorer("math_hard", unchanged, stored.mirror, tmp_path / "unchanged").rescore(
        stored.results, stored.samples_files
    )
    assert rescored["results"] == stored.results["results"]


@pytest.mark.usefixtures("no_model")
def test_a_changed_scorer_changes_exactly_what_it_scores(stored: Stored, tmp_path: Path) -> None:
    config = load_config(
        task_set=load_task_set(
            _task_set_with_scorer(tmp_path, "leaderboard_math_", f"{SCORERS}:math_all_correct")
        )
    )
    rescorer = Rescorer("math_hard", config, stored.mirror, tmp_path / "work")
    rescored = rescorer.rescore(stored.results, stored.samples_files)

    old, new = stored.results["results"], rescored["results"]
    assert set(new) == set(old)
    math_tasks = {s.name for s in config.benchmark("math_hard").subtasks} | {"leaderboard_math_hard"}
    for name in old:
        if name not in math_tasks:
            assert new[name] == old[name], f"{name} changed, but its scorer did not"
            continue
        assert set(new[name]) == set(old[name]), name
        assert new[name]["exact_match,none"] == 1.0, name
        assert new[name]["exact_match_stderr,none"] == 0.0, name  # every sample scores the same
        unchanged = set(old[name]) - {"exact_match,none", "exact_match_stderr,none"}
        assert {k: new[name][k] for k in unchanged} == {k: old[name][k] for k in unchanged}, name
    assert old["leaderboard_math_hard"]["exact_match,none"] < 1.0, "the tiny model solved MATH"
    assert rescored["groups"]["leaderboard_math_hard"]["exact_match,none"] == 1.0
    assert rescored["groups"]["leaderboard_gpqa"] == stored.results["groups"]["leaderboard_gpqa"]
    assert rescored["rescored"]["math_hard"]["scorers"]["leaderboard_math_algebra_hard"] == (
        f"{SCORERS}:math_all_correct"
    )
    # The stored results are untouched; the published columns move for MATH only.
    assert "rescored" not in stored.results
    before = normalize(stored.results, config, allow_missing=True)
    after = normalize(rescored, config, allow_missing=True)
    assert after["MATH Lvl 5 Raw"] == 1.0 and after["MATH Lvl 5"] == 100.0
    assert {k: v for k, v in after.items() if not k.startswith("MATH")} == {
        k: v for k, v in before.items() if not k.startswith("MATH")
    }

    # The same Rescorer serves the next evaluation without rebuilding its tasks.
    again = rescorer.rescore(stored.results, stored.samples_files)
    assert again["results"] == new
    assert rescored["rescored"]["math_hard"]["not_recomputed"] == []
    # A group above the benchmark (the reference's `leaderboard`) keeps the run's entry, and says so.
    subtasks = {
        **stored.results["group_subtasks"],
        "leaderboard": ["leaderboard_gpqa", "leaderboard_math_hard"],
    }
    above = rescorer.rescore({**stored.results, "group_subtasks": subtasks}, stored.samples_files)
    assert above["rescored"]["math_hard"]["not_recomputed"] == ["leaderboard"]


def test_missing_samples_and_bad_scorers_are_refused(stored: Stored, tmp_path: Path) -> None:
    config = load_config()
    gpqa_files = [p for p in stored.samples_files if "gpqa_main" not in p.name]
    with pytest.raises(RescoreError, match="no stored samples for leaderboard_gpqa_main"):
        Rescorer("gpqa", config, stored.mirror, tmp_path).rescore(stored.results, gpqa_files)
    with pytest.raises(RescoreError, match="has no benchmark 'nope'"):
        Rescorer("nope", config, stored.mirror, tmp_path)
    missing = load_task_set(_task_set_with_scorer(tmp_path, "leaderboard_math_", f"{SCORERS}:no_such"))
    with pytest.raises(TaskSetError, match="has no function no_such"):
        materialize(missing, tmp_path / "tasks", stored.mirror)
    bad = _task_set_with_scorer(tmp_path, "leaderboard_math_", "not a scorer:x")
    with pytest.raises(TaskSetError, match="process_results"):
        load_task_set(bad)


def _store(app: App, stored: Stored, model: str, sha: str) -> int:
    now = app.clock()
    app.requests.create(new_request(model=model, sha=sha), now, None)
    request = app.queue.claim("worker")
    assert request is not None and request.model == model
    config = load_config()
    app.evaluations.store_and_finish(
        Evaluation(
            request_id=request.id,
            leaderboard=config.name,
            config_hash=config_hash(config),
            scores=normalize(stored.results, config, allow_missing=True),
            stderrs={},
            results=stored.results,
            provenance={"samples_files": [str(p) for p in stored.samples_files]},
            artifacts=str(stored.root / "run"),
            attempt=request.attempts,
            worker_id="worker",
            started_at=now,
            finished_at=now,
            duration_seconds=1.0,
        ),
        now,
    )
    return request.id


def _published(folder: Path) -> dict[str, dict[str, Any]]:
    """The published table, by model."""
    import pyarrow.parquet as pq

    return {row["fullname"]: row for row in pq.read_table(folder / "leaderboard.parquet").to_pylist()}


@pytest.mark.usefixtures("no_model")
def test_rescoring_stores_and_publishes_new_versions_and_keeps_the_old(
    stored: Stored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    from click.testing import CliRunner
    from datasets import load_dataset

    from backend.cli.rescore import rescore

    config = load_config()
    original = normalize(stored.results, config, allow_missing=True)
    results = tmp_path / "results"
    settings = Settings(
        database_url=database_url, data_mirror=stored.mirror, work_dir=tmp_path / "work", results=str(results)
    )
    app = App.open(settings)
    try:
        first = _store(app, stored, "org/first", "a" * 40)
        second = _store(app, stored, "org/second", "b" * 40)
        changed = load_task_set(
            _task_set_with_scorer(tmp_path, "leaderboard_math_", f"{SCORERS}:math_all_correct")
        )
        service = RescoreService(
            app.settings, app.evaluations, app.requests, app.clock, config=load_config(task_set=changed)
        )

        # A dry run reports and stores nothing.
        (dry,) = service.rescore("math_hard", ["org/first"], store=False)
        assert (dry.from_version, dry.version, dry.new_scores["MATH Lvl 5"]) == (1, None, 100.0)
        assert len(app.evaluations.versions(first, config.name)) == 1

        (only,) = service.rescore("math_hard", ["org/first"])
        assert only.request_id == first and (only.from_version, only.version) == (1, 2)
        assert only.old_scores["MATH Lvl 5"] == original["MATH Lvl 5"]
        assert only.new_scores["MATH Lvl 5"] == 100.0
        assert only.changed == ["MATH Lvl 5 Raw", "MATH Lvl 5"]  # the average is None: a partial run
        v1, v2 = app.evaluations.versions(first, config.name)
        assert v1.results == stored.results and v1.version == 1  # the old version is kept as it was
        assert (v2.version, v2.rescored_from, v2.scores["MATH Lvl 5"]) == (2, v1.id, 100.0)
        assert v2.stderrs["MATH Lvl 5 Raw stderr"] == 0.0  # every sample now scores 1
        assert {k: v for k, v in v2.scores.items() if not k.startswith("MATH")} == {
            k: v for k, v in v1.scores.items() if not k.startswith("MATH")
        }
        assert app.evaluations.get(first, config.name) == v2
        (record,) = v2.provenance["rescores"]
        assert record["benchmark"] == "math_hard" and record["from_version"] == 1
        assert record["scorers"]["leaderboard_math_algebra_hard"] == f"{SCORERS}:math_all_correct"
        # The re-scored samples replace MATH's; the other tasks keep the run's.
        math_tasks = {s.name for s in config.benchmark("math_hard").subtasks}
        new_files = samples_by_task(v2.provenance["samples_files"])
        assert new_files.keys() == samples_by_task(stored.samples_files).keys()
        for task, path in new_files.items():
            assert (str(path) in record["samples_files"]) == (task in math_tasks), task
            if task in math_tasks:
                lines = path.read_text().splitlines()
                assert lines and all(json.loads(line)["exact_match"] == 1 for line in lines)
        assert app.evaluations.get(second, config.name).version == 1  # type: ignore[union-attr]

        # Re-scoring with the same scorer again changes nothing, so stores nothing.
        (again,) = service.rescore("math_hard", ["org/first"])
        assert (again.from_version, again.version, again.changed) == (2, None, [])
        with pytest.raises(RescoreError, match="no stored evaluation on open_llm_v2 for org/nobody"):
            service.rescore("math_hard", ["org/nobody"])

        report = app.publish_results()
        assert report.published == 3  # v1 and v2 of org/first, v1 of org/second
    finally:
        app.close()
    table = _published(results)
    assert (table["org/first"]["Result version"], table["org/first"]["MATH Lvl 5"]) == (2, 100.0)
    assert table["org/first"]["Rescored"] == "math_hard"
    assert (table["org/second"]["Result version"], table["org/second"]["Rescored"]) == (1, None)
    assert table["org/second"]["MATH Lvl 5"] == original["MATH Lvl 5"]
    assert len(list((results / "results" / "org" / "first").glob("results_*.json"))) == 2
    details = "details_org__first__leaderboard_math_algebra_hard"
    latest = load_dataset(str(results), details, split="latest")
    assert latest.num_rows == 2 and all(json.loads(s)["exact_match"] == 1 for s in latest["scores"])
    assert len(load_dataset(str(results), details)) == 3  # two versions and "latest"

    # The command, with the pinned task set's own scorers: MATH goes back to the run's scores as
    # version 3 and is published; org/second is unchanged.
    for name, value in (
        ("DATABASE_URL", database_url),
        ("DATA_MIRROR", str(stored.mirror)),
        ("WORK_DIR", str(tmp_path / "work")),
        ("RESULTS", str(results)),
    ):
        monkeypatch.setenv(f"LEADERBOARD_{name}", value)
    result = CliRunner().invoke(rescore, ["--benchmark", "math_hard", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(r["model"], r["from_version"], r["version"]) for r in report["rescored"]] == [
        ("org/first", 2, 3),
        ("org/second", 1, None),
    ]
    assert (report["stored"], report["published"]) == (1, 1)
    table = _published(results)
    assert table["org/first"]["Result version"] == 3
    assert table["org/first"]["MATH Lvl 5"] == original["MATH Lvl 5"]
    assert len(list((results / "results" / "org" / "first").glob("results_*.json"))) == 3

    result = CliRunner().invoke(rescore, ["--benchmark", "gpqa", "-m", "org/second"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "org/second" in result.output and "org/first" not in result.output and "stored 0" in result.output
    result = CliRunner().invoke(rescore, ["--benchmark", "nope"])
    assert result.exit_code == 1 and "rescore_failed" in result.output


def test_samples_files_are_found_by_task_latest_first(tmp_path: Path) -> None:
    names = [
        "samples_leaderboard_gpqa_main_2026-01-01T10-00-00.000001.jsonl",
        "samples_leaderboard_gpqa_main_2026-01-02T10-00-00.000001.jsonl",
        "samples_leaderboard_bbh_snarks_2026-01-01T10-00-00.000001.jsonl",
        "results_2026-01-01T10-00-00.000001.json",
    ]
    found = samples_by_task([tmp_path / name for name in names])
    assert found == {
        "leaderboard_gpqa_main": tmp_path / names[1],
        "leaderboard_bbh_snarks": tmp_path / names[2],
    }
