"""The judged leaderboards' data in the data mirror: synthesized in the real schemas and read back as runs
read it, verified, refused where it would give a NaN, pinned in the configs, copied from a (fake) Hub."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import backend.errors as errors
from backend.cli.data import data as data_cli
from backend.evaluation import data, synthetic
from backend.evaluation.tasks import load_task_set, tasks_folder
from backend.judged import data as judged
from backend.judged.config import JudgedConfig, load_judged_config
from backend.judged.glm import read_glm_table
from backend.judged.synthetic import GLM_TABLE_HEADER, SOURCE_SETS, synthesize_judged
from backend.leaderboards.config import CONFIG_DIR

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
REPO = "tatsu-lab/alpaca_eval"


@pytest.fixture(scope="module")
def configs() -> dict[str, JudgedConfig]:
    return {c.name: c for c in judged.load_judged_configs(["all"])}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, configs: dict[str, JudgedConfig]) -> Path:
    folder = synthetic.synthesize(tmp_path_factory.mktemp("mirror"), rows=2, seed=3)
    synthesize_judged(folder, list(configs.values()), rows=7, seed=3)
    return folder


def _copy(mirror: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(mirror, tmp_path / "copy"))


def _rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def _pinned(config: JudgedConfig) -> JudgedConfig:
    """The config with every data revision pinned (to read the Hub, which refuses unpinned data)."""
    table = config.scoring.glm_table
    return dataclasses.replace(
        config,
        instructions=dataclasses.replace(
            config.instructions, dataset=dataclasses.replace(config.instructions.dataset, revision=SHA)
        ),
        reference=dataclasses.replace(
            config.reference, dataset=dataclasses.replace(config.reference.dataset, revision=SHA)
        ),
        scoring=dataclasses.replace(
            config.scoring, glm_table=table and dataclasses.replace(table, revision=SHA)
        ),
    )


def test_every_judged_config_is_found_and_reads_three_files(configs: dict[str, JudgedConfig]) -> None:
    assert set(configs) == {"alpaca_eval_2", "pandalm"}
    assert [judged.describe_ref(r) for r in judged.judged_data_files(configs["alpaca_eval_2"])] == [
        f"{REPO}/alpaca_eval/eval",
        f"{REPO}/alpaca_eval_gpt4_baseline/eval",
        f"{REPO}/df_gamed.csv",
    ]
    assert len(judged.judged_data_files(configs["pandalm"])) == 2  # no GLM table: the fallback GLM
    with pytest.raises(errors.LeaderboardConfigError, match="not a judged leaderboard"):
        judged.load_judged_configs(["open_llm_v2"])


def test_synthesized_splits_have_alpaca_evals_schema_and_the_same_instructions(mirror: Path) -> None:
    instructions = _rows(data.mirror_file(mirror, REPO, "alpaca_eval", "eval"))
    reference = _rows(data.mirror_file(mirror, REPO, "alpaca_eval_gpt4_baseline", "eval"))
    for path in (
        data.mirror_file(mirror, REPO, "alpaca_eval", "eval"),
        data.mirror_file(mirror, REPO, "alpaca_eval_gpt4_baseline", "eval"),
    ):
        schema = pq.read_schema(path)
        assert {f.name: str(f.type) for f in schema} == dict.fromkeys(
            ("instruction", "output", "generator", "dataset"), "string"
        )
    assert [r["instruction"] for r in instructions] == [r["instruction"] for r in reference]
    assert len(instructions) == 7
    assert {r["generator"] for r in reference} == {"gpt4_1106_preview"}
    assert {r["generator"] for r in instructions} == {"text_davinci_003"}
    assert {r["dataset"] for r in instructions} <= set(SOURCE_SETS)
    header = (mirror / REPO / "_files" / "df_gamed.csv").read_text(encoding="utf-8").splitlines()[0]
    assert tuple(header.split(",")) == GLM_TABLE_HEADER


def test_the_manifest_records_the_judged_files(mirror: Path) -> None:
    files = data.read_manifest(mirror)["files"]
    revision = data.dataset_revisions(mirror)[REPO]
    assert revision.startswith("synthetic-")
    ours = {name: entry for name, entry in files.items() if entry["repo"] == REPO}
    assert ours == {
        f"{REPO}/alpaca_eval/eval.parquet": {
            "repo": REPO,
            "config": "alpaca_eval",
            "split": "eval",
            "source": "synthetic",
            "revision": revision,
            "rows": 7,
            "sha256": data.file_sha256(mirror / REPO / "alpaca_eval" / "eval.parquet"),
        },
        f"{REPO}/alpaca_eval_gpt4_baseline/eval.parquet": {
            "repo": REPO,
            "config": "alpaca_eval_gpt4_baseline",
            "split": "eval",
            "source": "synthetic",
            "revision": revision,
            "rows": 7,
            "sha256": data.file_sha256(mirror / REPO / "alpaca_eval_gpt4_baseline" / "eval.parquet"),
        },
        f"{REPO}/_files/df_gamed.csv": {
            "repo": REPO,
            "config": None,
            "split": None,
            "file": "df_gamed.csv",
            "source": "synthetic",
            "revision": revision,
            "rows": 14,
            "sha256": data.file_sha256(mirror / REPO / "_files" / "df_gamed.csv"),
        },
    }
    data.verify_mirror(mirror)  # the task set's files are untouched


def test_synthesis_is_deterministic(mirror: Path, configs: dict[str, JudgedConfig], tmp_path: Path) -> None:
    again = synthetic.synthesize(tmp_path / "again", rows=2, seed=3)
    synthesize_judged(again, list(configs.values()), rows=7, seed=3)
    assert data.read_manifest(again)["files"] == data.read_manifest(mirror)["files"]


def test_a_run_reads_instructions_aligned_references_and_the_table(
    mirror: Path, configs: dict[str, JudgedConfig]
) -> None:
    config = configs["alpaca_eval_2"]
    instructions = judged.read_instructions(config, mirror)
    rows = _rows(data.mirror_file(mirror, REPO, "alpaca_eval", "eval"))
    assert instructions == [judged.Instruction(r["instruction"], r["dataset"]) for r in rows]
    reference = _rows(data.mirror_file(mirror, REPO, "alpaca_eval_gpt4_baseline", "eval"))
    outputs = judged.read_reference_outputs(config, mirror, instructions)
    assert outputs == [r["output"] for r in reference]
    # By instruction text, not by position.
    assert judged.read_reference_outputs(config, mirror, instructions[::-1]) == outputs[::-1]

    path = judged.glm_table_path(config, mirror)
    assert path == mirror / REPO / "_files" / "df_gamed.csv"
    table = read_glm_table(path)
    assert table.n_instructions == len(instructions) == 7
    assert len(table.preference) == 14 and not table.not_gamed_baseline.any()

    revision = data.dataset_revisions(mirror)[REPO]
    assert judged.judged_revisions(config, mirror) == judged.JudgedRevisions(revision, revision, revision)
    assert judged.judged_revisions(configs["pandalm"], mirror).as_dict() == {
        "instructions": revision,
        "reference": revision,
        "glm_table": None,
    }
    assert judged.glm_table_path(configs["pandalm"], mirror) is None
    judged.verify_judged_mirror(mirror, list(configs.values()))


def test_a_missing_reference_output_is_refused_with_the_instruction_named(
    mirror: Path, configs: dict[str, JudgedConfig], tmp_path: Path
) -> None:
    copy = _copy(mirror, tmp_path)
    config = configs["alpaca_eval_2"]
    path = data.mirror_file(copy, REPO, "alpaca_eval_gpt4_baseline", "eval")
    rows = _rows(path)
    dropped = rows.pop(3)
    pq.write_table(pa.Table.from_pylist(rows), path)
    instructions = judged.read_instructions(config, copy)
    with pytest.raises(errors.JudgedDataInvalid) as caught:
        judged.read_reference_outputs(config, copy, instructions)
    message = str(caught.value)
    assert (
        f"no reference output (gpt4_1106_preview, column output) for instruction 3 ({dropped['instruction']!r})"
        in (message)
    )
    assert "the reference must answer every instruction" in message

    rows.insert(3, {**dropped, "output": None})  # alpaca-eval's NaN
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(
        errors.JudgedDataInvalid, match="row 3, column output: nothing \\(null\\), not a string"
    ):
        judged.read_reference_outputs(config, copy, instructions)


def test_verify_catches_a_changed_or_missing_file(
    mirror: Path, configs: dict[str, JudgedConfig], tmp_path: Path
) -> None:
    copy = _copy(mirror, tmp_path)
    result = CliRunner().invoke(data_cli, ["verify", str(copy), "--judged", "all"])
    assert result.exit_code == 0, result.output
    assert f"{REPO}\tsynthetic-" in result.output

    table = copy / REPO / "_files" / "df_gamed.csv"
    table.write_text(table.read_text(encoding="utf-8").replace("False", "True", 1), encoding="utf-8")
    with pytest.raises(errors.MirrorError, match=r"_files/df_gamed\.csv does not match its sha256"):
        judged.verify_judged_mirror(copy, [configs["alpaca_eval_2"]])
    judged.verify_judged_mirror(copy, [configs["pandalm"]])  # pandalm reads no table
    result = CliRunner().invoke(data_cli, ["verify", str(copy), "--judged", "alpaca_eval_2"])
    assert result.exit_code == 1
    assert "error [data_mirror]: " in result.output
    assert "judged leaderboard alpaca_eval_2" in result.output
    # Without --judged, the task set's files alone are checked, as before.
    assert CliRunner().invoke(data_cli, ["verify", str(copy)]).exit_code == 0

    table.unlink()
    with pytest.raises(errors.MirrorError, match=r"df_gamed\.csv is in MANIFEST\.json but missing"):
        judged.glm_table_path(configs["alpaca_eval_2"], copy)
    (copy / REPO / "alpaca_eval" / "eval.parquet").unlink()
    with pytest.raises(errors.MirrorError, match=r"alpaca_eval/eval\.parquet is missing.*--judged pandalm"):
        judged.read_instructions(configs["pandalm"], copy)


def test_a_mirror_without_the_table_gives_none(configs: dict[str, JudgedConfig], tmp_path: Path) -> None:
    folder = synthetic.synthesize(tmp_path / "m", rows=1)
    synthesize_judged(folder, [configs["pandalm"]], rows=3)
    assert judged.glm_table_path(configs["alpaca_eval_2"], folder) is None
    assert judged.judged_revisions(configs["alpaca_eval_2"], folder).glm_table is None
    assert len(judged.read_instructions(configs["alpaca_eval_2"], folder)) == 3
    with pytest.raises(errors.MirrorError, match=r"df_gamed\.csv is not in MANIFEST\.json"):
        judged.check_judged_mirror(folder, [configs["alpaca_eval_2"]])


def test_mirror_paths_stay_inside_the_mirror(tmp_path: Path) -> None:
    assert (
        data.mirror_repo_file(tmp_path, REPO, "df_gamed.csv") == tmp_path / REPO / "_files" / "df_gamed.csv"
    )
    for repo, config, split in [
        ("../etc", None, "train"),
        ("a/..", None, "train"),
        ("/abs/path", None, "train"),
        (REPO, "..", "eval"),
        (REPO, "a/b", "eval"),
        (REPO, None, "../../x"),
        (REPO, "_files", "eval"),  # a config would shadow the repository's files
    ]:
        with pytest.raises(errors.MirrorError):
            data.mirror_file(tmp_path, repo, config, split)
    for filename in ("../MANIFEST.json", "a/b.csv", ".hidden", ""):
        with pytest.raises(errors.MirrorError):
            data.mirror_repo_file(tmp_path, REPO, filename)


# ------------------------------------------------------------------------------------ the Hub, faked


class FakeHub:
    """datasets.load_dataset, hf_hub_download and HfApi's commit look-ups, answered from tables."""

    splits: ClassVar[dict[tuple[str, str | None, str], dict[str, list[Any]]]] = {}
    files: ClassVar[dict[tuple[str, str], Path]] = {}
    commits: ClassVar[dict[str, str]] = {}
    calls: ClassVar[list[tuple[Any, ...]]] = []

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    @classmethod
    def load_dataset(cls, repo: str, config: str | None, **kwargs: Any) -> Any:
        import datasets

        cls.calls.append(("load_dataset", repo, config, tuple(sorted(kwargs.items()))))
        return datasets.Dataset.from_dict(cls.splits[(repo, config, kwargs["split"])])

    @classmethod
    def hf_hub_download(cls, repo: str, filename: str, **kwargs: Any) -> str:
        cls.calls.append(("hf_hub_download", repo, filename, tuple(sorted(kwargs.items()))))
        return str(cls.files[(repo, filename)])

    def dataset_info(self, repo_id: str) -> SimpleNamespace:
        if repo_id not in self.commits:
            raise RuntimeError(f"404: {repo_id} not found")
        return SimpleNamespace(sha=self.commits[repo_id])

    model_info = dataset_info


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, mirror: Path) -> type[FakeHub]:
    import datasets
    import huggingface_hub

    instructions = _rows(data.mirror_file(mirror, REPO, "alpaca_eval", "eval"))
    reference = _rows(data.mirror_file(mirror, REPO, "alpaca_eval_gpt4_baseline", "eval"))
    monkeypatch.setattr(
        FakeHub,
        "splits",
        {
            (REPO, "alpaca_eval", "eval"): {k: [r[k] for r in instructions] for k in instructions[0]},
            (REPO, "alpaca_eval_gpt4_baseline", "eval"): {k: [r[k] for r in reference] for k in reference[0]},
        },
    )
    monkeypatch.setattr(FakeHub, "files", {(REPO, "df_gamed.csv"): mirror / REPO / "_files" / "df_gamed.csv"})
    monkeypatch.setattr(FakeHub, "commits", {})
    monkeypatch.setattr(FakeHub, "calls", [])
    monkeypatch.setattr(datasets, "load_dataset", FakeHub.load_dataset)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    return FakeHub


def test_without_a_mirror_the_hub_is_read_at_the_pinned_revision(
    hub: type[FakeHub], configs: dict[str, JudgedConfig], mirror: Path
) -> None:
    config = _pinned(configs["alpaca_eval_2"])
    instructions = judged.read_instructions(config, None)
    assert instructions == judged.read_instructions(config, mirror)
    assert judged.read_reference_outputs(config, None, instructions) == judged.read_reference_outputs(
        config, mirror, instructions
    )
    path = judged.glm_table_path(config, None)
    assert path is not None and read_glm_table(path).n_instructions == 7
    assert judged.judged_revisions(config, None) == judged.JudgedRevisions(SHA, SHA, SHA)
    assert hub.calls == [
        ("load_dataset", REPO, "alpaca_eval", (("revision", SHA), ("split", "eval"), ("token", None))),
        (
            "load_dataset",
            REPO,
            "alpaca_eval_gpt4_baseline",
            (("revision", SHA), ("split", "eval"), ("token", None)),
        ),
        (
            "hf_hub_download",
            REPO,
            "df_gamed.csv",
            (("repo_type", "dataset"), ("revision", SHA), ("token", None)),
        ),
    ]  # never trust_remote_code

    with pytest.raises(errors.DatasetNotPinned, match="leaderboard data pin --judged alpaca_eval_2"):
        judged.read_instructions(configs["alpaca_eval_2"], None)


def test_every_value_read_is_checked(hub: type[FakeHub], configs: dict[str, JudgedConfig]) -> None:
    config = _pinned(configs["alpaca_eval_2"])
    split = hub.splits[(REPO, "alpaca_eval", "eval")]
    original = dict(split)
    cases = [
        (
            {"instruction": [*original["instruction"][:-1], "x" * 200_001]},
            "row 6, column instruction: 200001 ",
        ),
        ({"instruction": [*original["instruction"][:-1], "  "]}, "row 6: column instruction is empty"),
        ({"dataset": [*original["dataset"][:-1], "d" * 257]}, "row 6, column dataset: 257 characters"),
        ({"instruction": [*original["instruction"][:-1], None]}, "column instruction: nothing \\(null\\)"),
    ]
    for change, message in cases:
        split.update(original)
        split.update(change)
        with pytest.raises(errors.JudgedDataInvalid, match=message):
            judged.read_instructions(config, None)
    split.clear()
    split.update({"instruction": [str(i) for i in range(10_001)], "dataset": ["d"] * 10_001})
    with pytest.raises(errors.JudgedDataInvalid, match="10001 rows, more than 10000"):
        judged.read_instructions(config, None)
    split.clear()
    split.update({"prompt": original["instruction"]})
    with pytest.raises(errors.JudgedDataInvalid, match="no column instruction, dataset \\(it has prompt\\)"):
        judged.read_instructions(config, None)


def test_duplicate_instructions_take_the_references_outputs_in_order(
    hub: type[FakeHub], configs: dict[str, JudgedConfig]
) -> None:
    config = _pinned(configs["pandalm"])
    hub.splits[(REPO, "alpaca_eval_gpt4_baseline", "eval")] = {
        "instruction": ["a", "b", "a", "extra"],
        "output": ["a1", "b1", "a2", "unused"],
    }
    given = [judged.Instruction(t, None) for t in ("b", "a", "a")]
    assert judged.read_reference_outputs(config, None, given) == ["b1", "a1", "a2"]
    with pytest.raises(errors.JudgedDataInvalid, match="for instruction 3 \\('a'\\)"):
        judged.read_reference_outputs(config, None, [*given, judged.Instruction("a", None)])


def test_mirror_copies_the_judged_data_from_the_hub(
    hub: type[FakeHub], configs: dict[str, JudgedConfig], tmp_path: Path
) -> None:
    folder = synthetic.synthesize(tmp_path / "m", rows=1)
    hub.commits[REPO] = OTHER  # unpinned: the Hub's current commit, once for the repository
    revisions = judged.mirror_judged_from_hub(folder, list(configs.values()))
    assert revisions == {REPO: OTHER}
    files = data.read_manifest(folder)["files"]
    assert {files[name]["source"] for name in files if name.startswith(REPO)} == {"hub"}
    assert files[f"{REPO}/_files/df_gamed.csv"]["rows"] == 14
    assert judged.judged_revisions(configs["alpaca_eval_2"], folder) == judged.JudgedRevisions(
        OTHER, OTHER, OTHER
    )
    assert len(judged.read_instructions(configs["alpaca_eval_2"], folder)) == 7

    # One repository pinned at two commits cannot be mirrored: a mirror holds one revision of each.
    split = _pinned(configs["pandalm"])
    reference = dataclasses.replace(split.reference.dataset, revision=OTHER)
    split = dataclasses.replace(split, reference=dataclasses.replace(split.reference, dataset=reference))
    with pytest.raises(errors.MirrorError, match=f"{REPO} is pinned at {SHA}, {OTHER}"):
        judged.mirror_judged_from_hub(folder, [split])
    # Nor can a pin that differs from the revision the mirror holds: refused before anything is written.
    before = data.read_manifest(folder)
    with pytest.raises(errors.MirrorError, match=f"holds {REPO} at {OTHER}"):
        judged.mirror_judged_from_hub(folder, [_pinned(configs["pandalm"])])
    assert data.read_manifest(folder) == before
    data.check_mirror(folder, load_task_set())
    judged.verify_judged_mirror(folder, list(configs.values()))


def test_pin_writes_the_commits_into_the_judged_configs(
    hub: type[FakeHub], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "tasks.yaml"
    shutil.copy(tasks_folder() / "open_llm_v2.yaml", manifest)
    copies = []
    for name in ("alpaca_eval_2", "pandalm"):
        copies.append(tmp_path / f"{name}.yaml")
        shutil.copy(CONFIG_DIR / f"{name}.yaml", copies[-1])
    before = {path: path.read_text(encoding="utf-8") for path in copies}
    hub.commits.update({pin.repo: SHA for pin in load_task_set(str(manifest)).datasets})
    hub.commits.update({REPO: SHA, "WeOpenML/PandaLM-7B-v1": OTHER})
    args = ["pin", "--task-set", str(manifest), *(a for p in copies for a in ("--judged", str(p)))]

    result = CliRunner().invoke(data_cli, args)
    assert result.exit_code == 0, result.output
    assert f"{REPO}/df_gamed.csv\t{SHA}" in result.output
    assert f"WeOpenML/PandaLM-7B-v1\t{OTHER}" in result.output
    alpaca, pandalm = (load_judged_config(path) for path in copies)
    assert {r.revision for c in (alpaca, pandalm) for r in judged.judged_data_files(c)} == {SHA}
    assert pandalm.judge.revision == OTHER
    # Only the revisions changed: comments and flow mappings kept.
    assert copies[0].read_text(encoding="utf-8") == before[copies[0]].replace(
        "revision: null", f"revision: '{SHA}'"
    )
    assert copies[1].read_text(encoding="utf-8") == (
        before[copies[1]]
        .replace("  revision: null #", f"  revision: '{OTHER}' #")
        .replace("revision: null", f"revision: '{SHA}'")
    )

    hub.commits.clear()  # pinned already: the Hub is not asked
    assert CliRunner().invoke(data_cli, args).exit_code == 0
    hub.commits.update({pin.repo: SHA for pin in load_task_set(str(manifest)).datasets})
    hub.commits.update({REPO: OTHER, "WeOpenML/PandaLM-7B-v1": SHA})
    result = CliRunner().invoke(data_cli, [*args, "--update"])
    assert result.exit_code == 0, result.output
    assert load_judged_config(copies[0]).scoring.glm_table.revision == OTHER  # type: ignore[union-attr]
    assert load_judged_config(copies[1]).judge.revision == SHA


def test_cli_synthesize_and_verify_with_judged_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        data_cli, ["synthesize", str(tmp_path / "m"), "--rows", "3", "--judged", "alpaca_eval_2"]
    )
    assert result.exit_code == 0, result.output
    assert f"{REPO}\tsynthetic-" in result.output
    manifest = json.loads((tmp_path / "m" / "MANIFEST.json").read_text())
    assert manifest["files"][f"{REPO}/_files/df_gamed.csv"]["rows"] == 6
    result = CliRunner().invoke(data_cli, ["verify", str(tmp_path / "m"), "--judged", "all"])
    assert result.exit_code == 0, result.output

    result = CliRunner().invoke(data_cli, ["synthesize", str(tmp_path / "n"), "--judged", "open_llm_v2"])
    assert result.exit_code == 1
    assert "error [leaderboard_config]: " in result.output and "not a judged leaderboard" in result.output
    assert not (tmp_path / "n").exists()  # refused before anything is written


def test_a_benchmark_run_on_a_mirror_with_judged_data_records_only_its_datasets(
    mirror: Path, tmp_path: Path
) -> None:
    from backend.evaluation.materialize import materialize, read_materialized

    task_set = load_task_set()
    recorded = read_materialized(materialize(task_set, tmp_path / "tasks", mirror))["dataset_revisions"]
    assert set(recorded) == {pin.repo for pin in task_set.datasets}
    assert REPO in data.dataset_revisions(mirror)
