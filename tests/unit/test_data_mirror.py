"""The data mirror: synthetic data in the real schemas, its manifest, NLTK's punkt data, pins, the CLI."""

from __future__ import annotations

import ast
import json
import random
import shutil
import string
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import backend.errors as errors
from backend.cli.data import data as data_cli
from backend.evaluation import data, synthetic, tasks
from backend.evaluation.tasks import load_task_set

SHA = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.synthesize(tmp_path_factory.mktemp("mirror"), rows=6, seed=3)


def _rows(mirror: Path, repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(data.mirror_file(mirror, repo, config, split)).to_pylist()
    return rows


def _schema(mirror: Path, repo: str, config: str | None, split: str) -> dict[str, str]:
    schema = pq.read_schema(data.mirror_file(mirror, repo, config, split))
    return {field.name: str(field.type) for field in schema}


def test_the_manifest_records_every_file(mirror: Path) -> None:
    manifest = data.read_manifest(mirror)
    task_set = load_task_set()
    expected = {
        data.mirror_file(mirror, *key).relative_to(mirror).as_posix() for key in task_set.data_files()
    }
    assert set(manifest["files"]) == expected
    assert len(expected) == 24 + 2 + 3 + 1 + 7 * 2 + 3
    for name, entry in manifest["files"].items():
        assert entry["source"] == "synthetic"
        assert entry["revision"].startswith("synthetic-")
        assert entry["rows"] == pq.read_metadata(mirror / name).num_rows
        assert name == f"{entry['repo']}/{entry['config'] or 'default'}/{entry['split']}.parquet"
    assert manifest["nltk_data"] == {"path": "nltk_data", "punkt_tab": "trained-locally"}
    revisions = data.dataset_revisions(mirror)
    assert set(revisions) == {pin.repo for pin in task_set.datasets}
    data.verify_mirror(mirror)


def test_synthesis_is_deterministic(mirror: Path, tmp_path: Path) -> None:
    again = synthetic.synthesize(tmp_path / "again", rows=6, seed=3)
    assert data.read_manifest(again)["files"] == data.read_manifest(mirror)["files"]
    other = synthetic.synthesize(tmp_path / "other", rows=6, seed=4)
    assert (
        data.dataset_revisions(other)["SaylorTwift/bbh"] != data.dataset_revisions(mirror)["SaylorTwift/bbh"]
    )


def test_a_changed_file_fails_verification(tmp_path: Path) -> None:
    mirror = synthetic.synthesize(tmp_path / "m", rows=2)
    result = CliRunner().invoke(data_cli, ["verify", str(mirror)])
    assert result.exit_code == 0, result.output
    assert "every file is present and intact" in result.output

    path = data.mirror_file(mirror, "SaylorTwift/bbh", "snarks", "test")
    pq.write_table(pa.table({"input": ["x"], "target": ["(A)"]}), path)
    with pytest.raises(errors.MirrorError, match=r"snarks/test.parquet does not match its sha256"):
        data.verify_mirror(mirror)
    result = CliRunner().invoke(data_cli, ["verify", str(mirror)])
    assert result.exit_code == 1
    assert "error [data_mirror]: " in result.output


def test_bbh_targets_are_among_each_tasks_choices(mirror: Path) -> None:
    root = tasks.harness_tasks_folder()
    for subtask in load_task_set().subtasks:
        if subtask.dataset != "SaylorTwift/bbh":
            continue
        assert _schema(mirror, subtask.dataset, subtask.config, "test") == {
            "input": "string",
            "target": "string",
        }
        choices = tasks.read_task_file(root / subtask.yaml)["doc_to_choice"]
        rows = _rows(mirror, subtask.dataset, subtask.config, "test")
        assert len(rows) == 6
        assert all(row["target"] in choices for row in rows), subtask.name


def test_mmlu_pro_rows_have_lettered_answers_and_five_shots(mirror: Path) -> None:
    assert _schema(mirror, "TIGER-Lab/MMLU-Pro", None, "test") == {
        "question_id": "int64",
        "question": "string",
        "options": "list<element: string>",
        "answer": "string",
        "answer_index": "int64",
        "cot_content": "string",
        "category": "string",
        "src": "string",
    }
    for split in ("test", "validation"):
        rows = _rows(mirror, "TIGER-Lab/MMLU-Pro", None, split)
        for row in rows:
            assert 1 <= len(row["options"]) <= 10
            assert row["answer"] == string.ascii_uppercase[row["answer_index"]]
            assert row["answer_index"] < len(row["options"])
    assert len(_rows(mirror, "TIGER-Lab/MMLU-Pro", None, "validation")) >= 5


def test_gpqa_rows_have_the_answer_fields(mirror: Path) -> None:
    for config in ("gpqa_diamond", "gpqa_main", "gpqa_extended"):
        schema = _schema(mirror, "Idavidrein/gpqa", config, "train")
        assert schema["Question"] == schema["Correct Answer"] == schema["Incorrect Answer 3"] == "string"
        assert schema["Expert Validator Accuracy"] == "double"
        for row in _rows(mirror, "Idavidrein/gpqa", config, "train"):
            answers = [row["Correct Answer"], *(row[f"Incorrect Answer {i}"] for i in (1, 2, 3))]
            assert all(answers) and len(set(answers)) == 4


def test_ifeval_rows_have_one_kwargs_struct_per_instruction(mirror: Path) -> None:
    schema = _schema(mirror, "wis-k/instruction-following-eval", None, "train")
    assert list(schema)[:3] == ["key", "prompt", "instruction_id_list"]
    assert schema["kwargs"].startswith("list<element: struct<num_highlights: int64, relation: string")
    rows = _rows(mirror, "wis-k/instruction-following-eval", None, "train")
    seen = set()
    for row in rows:
        assert len(row["kwargs"]) == len(row["instruction_id_list"]) >= 2
        for instruction, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
            seen.add(instruction)
            assert instruction in synthetic.IFEVAL_INSTRUCTIONS
            given = {k for k, v in kwargs.items() if v is not None}
            assert given == set(synthetic._ifeval_instruction(instruction, random.Random(0))[1])
    assert seen == set(synthetic.IFEVAL_INSTRUCTIONS)


def test_math_rows_are_level_5_with_boxed_answers(mirror: Path) -> None:
    for subtask in load_task_set().subtasks:
        if subtask.dataset != "DigitalLearningGmbH/MATH-lighteval":
            continue
        for split in subtask.split_names:
            rows = _rows(mirror, subtask.dataset, subtask.config, split)
            assert set(rows[0]) == {"problem", "level", "solution", "type"}
            assert sum(row["level"] == "Level 5" for row in rows) >= 6
            assert all("\\boxed{" in row["solution"] for row in rows)
            assert {row["type"] for row in rows} == {synthetic._MATH_TYPES[subtask.config or ""]}


@pytest.mark.parametrize(
    ("split", "counts"),
    [("murder_mysteries", {2}), ("object_placements", {3, 4, 5}), ("team_allocation", {3})],
)
def test_musr_choices_are_python_literals(mirror: Path, split: str, counts: set[int]) -> None:
    assert _schema(mirror, "TAUR-Lab/MuSR", None, split) == {
        "narrative": "string",
        "question": "string",
        "choices": "string",
        "answer_index": "int64",
        "answer_choice": "string",
    }
    for row in _rows(mirror, "TAUR-Lab/MuSR", None, split):
        choices = ast.literal_eval(row["choices"])
        assert len(choices) in counts
        assert choices[row["answer_index"]] == row["answer_choice"]


def test_the_punkt_model_splits_sentences(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nltk.data import find
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    folder = data.nltk_data_dir(mirror)
    monkeypatch.setenv("NLTK_DATA", str(folder))  # nltk only reads files under its data roots
    for name in data.PUNKT_FILES:
        assert (folder / "tokenizers/punkt_tab/english" / name).is_file()
    params = load_punkt_params(find("tokenizers/punkt_tab/english/", paths=[str(folder)]))
    assert {"dr", "mr", "e.g"} <= params.abbrev_types
    sentences = PunktSentenceTokenizer(params).tokenize(
        "Dr. Smith came home at noon. Nobody saw him. Did Mr. Lee call? He did, e.g. twice."
    )
    assert sentences == [
        "Dr. Smith came home at noon.",
        "Nobody saw him.",
        "Did Mr. Lee call?",
        "He did, e.g. twice.",
    ]


class FakeHfApi:
    """The one Hub call `pin` makes, answered from a table of current commits."""

    commits: ClassVar[dict[str, str]] = {}

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def dataset_info(self, repo_id: str) -> SimpleNamespace:
        if repo_id not in self.commits:
            raise RuntimeError(f"404: {repo_id} not found")
        return SimpleNamespace(sha=self.commits[repo_id])


def test_pin_writes_the_hubs_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    manifest = tmp_path / "pins.yaml"
    shutil.copy(tasks.tasks_folder() / "open_llm_v2.yaml", manifest)
    task_set = load_task_set(str(manifest))
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(FakeHfApi, "commits", {pin.repo: SHA for pin in task_set.datasets})

    result = CliRunner().invoke(data_cli, ["pin", "--task-set", str(manifest)])
    assert result.exit_code == 0, result.output
    assert f"TAUR-Lab/MuSR\t{SHA}" in result.output
    assert {pin.revision for pin in load_task_set(str(manifest)).datasets} == {SHA}

    del FakeHfApi.commits["TAUR-Lab/MuSR"]
    result = CliRunner().invoke(data_cli, ["pin", "--task-set", str(manifest), "--update"])
    assert result.exit_code == 1
    assert "error [dataset_source_unavailable]: could not read dataset TAUR-Lab/MuSR" in result.output


def test_cli_synthesize(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_cli, ["synthesize", str(tmp_path / "m"), "--rows", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "TIGER-Lab/MMLU-Pro\tsynthetic-" in result.output
    assert f"NLTK_DATA={tmp_path / 'm' / 'nltk_data'}" in result.output
    manifest = json.loads((tmp_path / "m" / "MANIFEST.json").read_text())
    assert {entry["rows"] for entry in manifest["files"].values()} == {2, 5}  # MMLU-Pro's 5 shots


def test_cli_errors_name_the_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_cli, ["synthesize", str(tmp_path / "m"), "--task-set", "nope"])
    assert result.exit_code == 1
    assert "error [task_set_invalid]: no task set named 'nope'" in result.output
