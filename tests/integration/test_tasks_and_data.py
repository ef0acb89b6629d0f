"""The pinned task set run by the real harness on a synthesized data mirror, with a real tiny model.

lm_eval and datasets are imported inside the tests, after the autouse fixture has set the offline
variables and a temporary HF_HOME.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from backend.evaluation import data, synthetic
from backend.evaluation import tasks as tasks_module
from backend.evaluation.materialize import hub_configs, materialize
from backend.evaluation.tasks import load_task_set
from backend.modelbuilder import write_tiny_model

pytestmark = pytest.mark.slow

#: What each kind of subtask must report.
METRICS = {
    "leaderboard_mmlu_pro": ["acc,none"],
    "leaderboard_bbh_": ["acc_norm,none"],
    "leaderboard_gpqa_": ["acc_norm,none"],
    "leaderboard_math_": ["exact_match,none", "exact_match_original,none"],
    "leaderboard_ifeval": [
        "prompt_level_strict_acc,none",
        "inst_level_strict_acc,none",
        "prompt_level_loose_acc,none",
        "inst_level_loose_acc,none",
    ],
    "leaderboard_musr_": ["acc_norm,none"],
}


def _metrics_of(task: str) -> list[str]:
    return next(metrics for prefix, metrics in METRICS.items() if task.startswith(prefix))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    write_tiny_model(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mirror = synthetic.synthesize(tmp_path / "mirror", rows=4)
    folder = str(data.nltk_data_dir(mirror).resolve())
    monkeypatch.setenv("NLTK_DATA", folder)  # restored after the test
    if "nltk.data" in sys.modules:  # imported by an earlier test of this process: it read NLTK_DATA then
        monkeypatch.setattr(sys.modules["nltk.data"], "path", [folder, *sys.modules["nltk.data"].path])
    return mirror


def _evaluate(folder: Path, model_dir: Path, tasks: list[str], limit: int, **options: Any) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        **options,
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32",
        tasks=tasks,
        device="cpu",
        batch_size=1,
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
    )
    assert results is not None
    return results


def test_ifeval_finds_the_mirrors_punkt_without_downloading(
    mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nltk

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"nltk.download{args} was called")

    monkeypatch.setattr(nltk, "download", no_download)
    from lm_eval.tasks.ifeval import instructions_util

    instructions_util.download_nltk_resources()  # what importing it runs: finds punkt_tab, downloads nothing
    assert instructions_util.count_sentences("Dr. Smith came home. Nobody saw him. Did Mr. Lee?") == 3


def test_every_ifeval_instruction_builds_from_its_kwargs(mirror: Path) -> None:
    """The kwargs synthesized for each instruction are the parameters lm-eval's checker takes."""
    from lm_eval.tasks.ifeval import instructions_registry

    for instruction in synthetic.IFEVAL_INSTRUCTIONS:
        _, kwargs = synthetic._ifeval_instruction(instruction, random.Random(0))
        checker = instructions_registry.INSTRUCTION_DICT[instruction](instruction)
        checker.build_description(**kwargs)
        assert checker.check_following("Some Words. MORE WORDS here.\n\nAnother sentence.") in (True, False)


def test_the_whole_task_set_runs_on_a_synthesized_mirror(
    tmp_path: Path, mirror: Path, model_dir: Path
) -> None:
    task_set = load_task_set()
    folder = materialize(task_set, tmp_path / "tasks", mirror)

    # Generations are cut to 256 tokens (from IFEval's 1280 and MATH's 1024): the same code paths at a
    # quarter of the time (about 20 s instead of 40 to 80 s on two CPUs).
    results = _evaluate(
        folder, model_dir, list(task_set.run_names), limit=2, gen_kwargs={"max_gen_toks": 256}
    )

    subtasks = [s.name for s in task_set.subtasks]
    for name in subtasks:
        entry = results["results"][name]
        for metric in _metrics_of(name):
            assert isinstance(entry[metric], float | int), f"{name}: {metric} is {entry.get(metric)!r}"
            assert 0 <= entry[metric] <= 1
        assert len(results["samples"][name]) == 2, name
        assert results["configs"][name]["dataset_path"] == "parquet"
    assert results["configs"]["leaderboard_math_algebra_hard"]["generation_kwargs"]["until"] == ["Problem:"]
    assert results["configs"]["leaderboard_ifeval"]["generation_kwargs"]["max_gen_toks"] == 256
    for group in task_set.groups:
        if group.kind == "group":
            assert group.name in results["results"]
            assert results["group_subtasks"][group.name] == list(group.subtasks)
    assert results["results"]["leaderboard_bbh"]["acc_norm,none"] >= 0
    assert results["results"]["leaderboard_math_hard"]["exact_match,none"] >= 0

    # IFEval really scored the generations: per-instruction results for every instruction of both docs.
    for sample in results["samples"]["leaderboard_ifeval"]:
        assert sample["resps"][0][0].strip(), "the model generated nothing to score"
        strict = sample["inst_level_strict_acc"]
        assert len(strict) == len(sample["doc"]["instruction_id_list"])
        assert all(isinstance(flag, bool) for flag in strict)
    assert (
        "length_constraints:number_sentences"
        in results["samples"]["leaderboard_ifeval"][0]["doc"]["instruction_id_list"]
    )  # counted with the mirror's punkt model

    # The recorded configs name the mirror's files; hub_configs gives back the Hub identity.
    restored = hub_configs(results["configs"], folder)
    revisions = data.dataset_revisions(mirror)
    assert restored["leaderboard_ifeval"]["dataset_path"] == "wis-k/instruction-following-eval"
    assert restored["leaderboard_ifeval"]["dataset_kwargs"] == {
        "revision": revisions["wis-k/instruction-following-eval"]
    }


def _task_hashes(results: dict[str, Any], output: Path) -> dict[str, str]:
    """The task hashes lm-eval's EvaluationTracker records with the results."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(output))
    aggregated = {k: v for k, v in results.items() if k != "samples"}
    tracker.save_results_aggregated(results=aggregated, samples=results["samples"])
    (saved,) = output.rglob("results_*.json")
    hashes: dict[str, str] = json.loads(saved.read_text())["task_hashes"]
    return hashes


def test_task_hashes_do_not_depend_on_where_the_mirror_lies(tmp_path: Path, model_dir: Path) -> None:
    task_set = load_task_set()
    first = synthetic.synthesize(tmp_path / "one" / "mirror", rows=3, seed=7)
    second = synthetic.synthesize(tmp_path / "elsewhere" / "deeper" / "copy", rows=3, seed=7)
    tasks = ["leaderboard_mmlu_pro", "leaderboard_gpqa", "leaderboard_musr", "leaderboard_bbh_snarks"]

    runs = []
    for index, mirror in enumerate((first, second)):
        folder = materialize(task_set, tmp_path / f"tasks-{index}", mirror)
        results = _evaluate(folder, model_dir, tasks, limit=2)
        runs.append((folder, results, _task_hashes(results, tmp_path / f"out-{index}")))

    (folder_a, results_a, hashes_a), (folder_b, results_b, hashes_b) = runs
    assert set(hashes_a) == {
        "leaderboard_mmlu_pro",
        "leaderboard_gpqa_diamond",
        "leaderboard_gpqa_extended",
        "leaderboard_gpqa_main",
        "leaderboard_musr_murder_mysteries",
        "leaderboard_musr_object_placements",
        "leaderboard_musr_team_allocation",
        "leaderboard_bbh_snarks",
    }
    assert hashes_a == hashes_b
    assert data.dataset_revisions(first) == data.dataset_revisions(second)
    # The raw configs differ only by the mirror's path; restored, they are identical.
    assert results_a["configs"] != results_b["configs"]
    restored = hub_configs(results_a["configs"], folder_a)
    assert restored == hub_configs(results_b["configs"], folder_b)
    installed = tasks_module.harness_tasks_folder() / "leaderboard/musr/musr_team_allocation.yaml"
    assert restored["leaderboard_musr_team_allocation"]["metadata"]["config_source"] == str(installed)
    assert results_a["results"]["leaderboard_mmlu_pro"] == results_b["results"]["leaderboard_mmlu_pro"]

    # Different data gives different hashes.
    other = synthetic.synthesize(tmp_path / "other", rows=3, seed=8)
    folder = materialize(task_set, tmp_path / "tasks-other", other)
    results = _evaluate(folder, model_dir, ["leaderboard_bbh_snarks"], limit=2)
    assert (
        _task_hashes(results, tmp_path / "out-other")["leaderboard_bbh_snarks"]
        != hashes_a["leaderboard_bbh_snarks"]
    )
