"""The task set manifest and the task files materialized from it (the harness runs them in integration)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import backend.errors as errors
from backend.errors import DatasetNotPinned, HarnessMismatch, TaskSetError
from backend.evaluation import data, synthetic, tasks
from backend.evaluation.materialize import hub_configs, materialize, read_materialized
from backend.evaluation.tasks import load_task_set

GROUPS = {
    "leaderboard_mmlu_pro": 1,
    "leaderboard_bbh": 24,
    "leaderboard_gpqa": 3,
    "leaderboard_math_hard": 7,
    "leaderboard_ifeval": 1,
    "leaderboard_musr": 3,
}
SHA = "1234567890" * 4  # all digits: YAML would read it as a number unless quoted


@pytest.fixture
def manifest_copy(tmp_path: Path) -> Path:
    """A copy of the real manifest that a test may change."""
    path = tmp_path / "copy.yaml"
    shutil.copy(tasks.tasks_folder() / "open_llm_v2.yaml", path)
    return path


def _edit(path: Path, change: Any) -> Path:
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_default_task_set_covers_the_six_benchmarks() -> None:
    task_set = load_task_set()
    assert task_set.name == "open_llm_v2"
    assert task_set.path == tasks.tasks_folder() / "open_llm_v2.yaml"
    assert task_set.harness == tasks.Harness("lm-eval", "0.4.13")
    # A run passes what the reference command passes, `--tasks leaderboard`; its groups are in its order.
    assert task_set.run_names == ("leaderboard",)
    assert [g.name for g in task_set.groups] == list(GROUPS)
    assert {g.name: len(g.subtasks) for g in task_set.groups} == GROUPS
    assert len(task_set.subtasks) == 39 == len({s.name for s in task_set.subtasks})
    assert {pin.repo for pin in task_set.datasets} == {s.dataset for s in task_set.subtasks}
    by_name = {s.name: s for s in task_set.subtasks}
    assert by_name["leaderboard_mmlu_pro"].splits == (("test", "test"), ("fewshot", "validation"))
    assert by_name["leaderboard_gpqa_main"].split_names == ("train",)
    assert by_name["leaderboard_math_algebra_hard"].split_names == ("test", "train")
    assert by_name["leaderboard_musr_team_allocation"].split("test") == "team_allocation"
    assert by_name["leaderboard_ifeval"].config is None
    assert by_name["leaderboard_bbh_object_counting"].num_choices == 19
    assert by_name["leaderboard_gpqa_main"].chance == 0.25
    assert by_name["leaderboard_ifeval"].chance == 0.0


def test_the_harness_is_pinned_once_in_pyproject() -> None:
    """The task set names the package; its version is pyproject.toml's exact pin, and no manifest repeats it."""
    pyproject = tomllib.loads((tasks.project_root() / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("lm-eval")]
    assert len(pins) == 1 and "==" in pins[0]
    pinned = pins[0].split("==", 1)[1]
    assert load_task_set().harness.version == pinned == importlib.metadata.version("lm-eval")
    manifests = [
        *tasks.tasks_folder().glob("*.yaml"),
        *(tasks.project_root() / "leaderboard_configs").glob("*.yaml"),
    ]
    assert manifests
    for manifest in manifests:
        assert pinned not in manifest.read_text(), f"{manifest.name} repeats the harness version"


def test_a_task_set_is_found_by_name_or_path(manifest_copy: Path) -> None:
    assert load_task_set(str(manifest_copy)).path == manifest_copy.resolve()
    with pytest.raises(TaskSetError, match=r"no task set named 'nope'.*open_llm_v2"):
        load_task_set("nope")
    with pytest.raises(TaskSetError, match=r"does not exist"):
        load_task_set(str(manifest_copy.with_name("missing.yaml")))


def test_the_manifest_matches_the_installed_harness() -> None:
    """Every path, dataset, config, split and group membership is read back from lm-eval's own files."""
    tasks.check_harness(load_task_set())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda raw: raw.pop("harness"), "'harness'"),
        (lambda raw: raw.update(harness={"package": "lm-eval", "version": "0.4.13"}), "'harness'"),
        (
            lambda raw: raw.update(harness="not-a-dependency"),
            "pyproject.toml does not depend on not-a-dependency",
        ),
        (lambda raw: raw["tasks"][3].update(num_choices=1), "'tasks[3].num_choices'"),
        (lambda raw: raw["tasks"][3].pop("num_choices"), "'tasks[3].num_choices'"),
        (lambda raw: raw["tasks"][3].update(chance=0.5), "'tasks[3].chance'"),
        (lambda raw: raw["run"].update(yaml="../../etc/passwd.yaml"), "'run.yaml'"),
        (
            lambda raw: raw["datasets"]["SaylorTwift/bbh"].update(revision="main"),
            "'datasets.SaylorTwift/bbh.revision'",
        ),
        (lambda raw: raw["tasks"][3].update(dataset="nobody/else"), "'tasks[3].dataset'"),
        (lambda raw: raw["tasks"][0]["splits"].update(dev="dev"), "'tasks[0].splits'"),
        (lambda raw: raw["tasks"][5].update(name=raw["tasks"][4]["name"]), "'tasks[5].name'"),
        (lambda raw: raw["tasks"][2].update(group="leaderboard_nothing"), "'tasks[2].group'"),
        (lambda raw: raw["groups"][0].update(kind="bundle"), "'groups[0].kind'"),
        (lambda raw: raw["tasks"].pop(0), "'groups[0].name'"),
    ],
)
def test_a_malformed_manifest_names_the_file_and_field(manifest_copy: Path, change: Any, field: str) -> None:
    _edit(manifest_copy, change)
    with pytest.raises((TaskSetError, HarnessMismatch)) as caught:
        load_task_set(str(manifest_copy))
    if isinstance(caught.value, TaskSetError):
        assert str(manifest_copy) in caught.value.message
    assert field in caught.value.message


def test_a_different_harness_is_refused(tmp_path: Path) -> None:
    other = dataclasses.replace(load_task_set(), harness=tasks.Harness("lm-eval", "0.4.12"))
    with pytest.raises(HarnessMismatch, match=r"pins lm-eval 0.4.12 but 0.4.13 is installed"):
        materialize(other, tmp_path / "out", None)


def test_groups_out_of_the_reference_order_are_refused(manifest_copy: Path) -> None:
    """lm-eval loads the run group's members in its order, and GPQA's option shuffle depends on it."""
    _edit(manifest_copy, lambda raw: raw["groups"].reverse())
    with pytest.raises(
        HarnessMismatch, match=r"leaderboard/leaderboard.yaml does not list the manifest's groups in order"
    ):
        tasks.check_harness(load_task_set(str(manifest_copy)))


def test_a_manifest_that_drifted_from_the_harness_is_refused(manifest_copy: Path, tmp_path: Path) -> None:
    _edit(manifest_copy, lambda raw: raw["tasks"][1]["splits"].update(test="validation"))
    with pytest.raises(HarnessMismatch, match=r"leaderboard_bbh_boolean_expressions: splits"):
        tasks.check_harness(load_task_set(str(manifest_copy)))


def test_hub_runs_refuse_unpinned_datasets(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotPinned) as caught:
        materialize(load_task_set(), tmp_path / "out", None)
    assert "TIGER-Lab/MMLU-Pro" in caught.value.message
    assert "leaderboard data pin" in caught.value.message
    assert caught.value.code == "dataset_not_pinned"


def test_pinned_revisions_are_written_into_the_manifest_and_the_task_files(
    manifest_copy: Path, tmp_path: Path
) -> None:
    task_set = load_task_set(str(manifest_copy))
    repos = [pin.repo for pin in task_set.datasets]
    pinned = tasks.write_revisions(task_set, dict.fromkeys(repos, SHA))
    assert {pin.revision for pin in pinned.datasets} == {SHA}
    assert "# gated: pinning and mirroring need a token" in manifest_copy.read_text()  # comments kept
    with pytest.raises(TaskSetError, match=r"not a 40-character commit sha"):
        tasks.write_revisions(pinned, {repos[0]: "main"})

    folder = materialize(pinned, tmp_path / "out", None)
    override = yaml.safe_load((folder / "tasks" / "leaderboard_gpqa_main.yaml").read_text())
    installed = tasks.harness_tasks_folder() / "leaderboard/gpqa/gpqa_main_zeroshot.yaml"
    assert override == {
        "include": str(installed),
        "task": "leaderboard_gpqa_main",
        "dataset_kwargs": {"revision": SHA},
    }
    recorded = read_materialized(folder)
    assert recorded["data_source"] == "hub"
    assert recorded["dataset_revisions"] == dict.fromkeys(sorted(repos), SHA)


def test_materialized_mirror_tasks_read_only_the_mirror(tmp_path: Path) -> None:
    task_set = load_task_set()
    mirror = synthetic.synthesize(tmp_path / "mirror", rows=2)
    folder = materialize(task_set, tmp_path / "out", mirror)

    assert folder == (tmp_path / "out").resolve()
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml"))
    assert len(files) == 39 + 4 + 1  # every subtask, the four groups, and the run's group (leaderboard)
    assert yaml.safe_load((folder / "groups" / "leaderboard.yaml").read_text())["task"] == [
        g.name for g in task_set.groups
    ]
    for subtask in task_set.subtasks:
        override = yaml.safe_load((folder / "tasks" / f"{subtask.name}.yaml").read_text())
        assert Path(override["include"]).is_absolute()
        assert Path(override["include"]).is_file()
        assert override["dataset_path"] == "parquet"
        assert override["dataset_name"] is None
        data_files = override["dataset_kwargs"]["data_files"]
        assert set(data_files) == set(subtask.split_names)
        for split, path in data_files.items():
            assert Path(path) == data.mirror_file(mirror, subtask.dataset, subtask.config, split)
            assert Path(path).is_file()
    group = yaml.safe_load((folder / "groups" / "leaderboard_math_hard.yaml").read_text())
    installed = tasks.read_task_file(tasks.harness_tasks_folder() / "leaderboard/math/_leaderboard_math.yaml")
    assert group == installed
    assert group["aggregate_metric_list"] == [
        {"metric": "exact_match", "aggregation": "mean", "weight_by_size": True}
    ]

    recorded = read_materialized(folder)
    assert recorded["run_names"] == list(task_set.run_names)
    assert recorded["data_source"] == "mirror"
    assert recorded["dataset_revisions"] == data.dataset_revisions(mirror)

    # Materializing again over the same folder leaves no stale task files behind.
    (folder / "tasks" / "leftover.yaml").write_text("task: leftover\n")
    materialize(task_set, folder, mirror)
    assert not (folder / "tasks" / "leftover.yaml").exists()


def test_an_incomplete_mirror_is_refused(tmp_path: Path) -> None:
    mirror = synthetic.synthesize(tmp_path / "mirror", rows=2)
    missing = data.mirror_file(mirror, "TAUR-Lab/MuSR", None, "team_allocation")
    missing.unlink()
    with pytest.raises(errors.MirrorError, match=r"TAUR-Lab/MuSR/default/team_allocation.parquet is missing"):
        materialize(load_task_set(), tmp_path / "out", mirror)
    with pytest.raises(errors.MirrorError, match=r"no MANIFEST.json"):
        materialize(load_task_set(), tmp_path / "out", tmp_path)


def test_hub_configs_give_back_the_dataset_identity(tmp_path: Path) -> None:
    mirror = synthetic.synthesize(tmp_path / "mirror", rows=2)
    folder = materialize(load_task_set(), tmp_path / "out", mirror)
    recorded: dict[str, dict[str, Any]] = {
        "leaderboard_musr_murder_mysteries": {
            "task": "leaderboard_musr_murder_mysteries",
            "dataset_path": "parquet",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"murder_mysteries": "/somewhere/murder_mysteries.parquet"}},
            "num_fewshot": 0,
        },
        "leaderboard_musr": {"group": "leaderboard_musr"},
    }
    restored = hub_configs(recorded, folder)
    assert restored["leaderboard_musr_murder_mysteries"] == {
        "task": "leaderboard_musr_murder_mysteries",
        "dataset_path": "TAUR-Lab/MuSR",
        "dataset_name": None,
        "dataset_kwargs": {"revision": data.dataset_revisions(mirror)["TAUR-Lab/MuSR"]},
        "num_fewshot": 0,
    }
    assert restored["leaderboard_musr"] == {"group": "leaderboard_musr"}
