"""A leaderboard is a config: open_llm_v2.yaml declares the reference leaderboard, strictly validated."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
import yaml

from backend.errors import LeaderboardConfigError
from backend.evaluation.tasks import Harness, load_task_set
from backend.leaderboards import config as config_module
from backend.leaderboards.config import (
    Aggregation,
    ChatTemplate,
    Normalization,
    columns,
    config_hash,
    load_config,
    stderr_columns,
)

REPO = Path(__file__).parents[2]
OPEN_LLM_V2 = REPO / "leaderboard_configs" / "open_llm_v2.yaml"
SECOND = Path(__file__).parents[1] / "fixtures" / "leaderboards" / "two_benchmarks.yaml"
LM_EVAL_LEADERBOARD = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks" / "leaderboard"  # type: ignore[arg-type]

# reference-system.md, "Normalization": BBH's 24 subtasks by number of choices.
BBH_CHOICES = {
    2: "sports_understanding navigate snarks web_of_lies hyperbaton causal_judgement formal_fallacies "
    "boolean_expressions",
    3: "tracking_shuffled_objects_three_objects logical_deduction_three_objects disambiguation_qa",
    4: "temporal_sequences",
    5: "logical_deduction_five_objects tracking_shuffled_objects_five_objects penguins_in_a_table",
    6: "date_understanding movie_recommendation salient_translation_error_detection ruin_names",
    7: "logical_deduction_seven_objects tracking_shuffled_objects_seven_objects",
    11: "geometric_shapes",
    18: "reasoning_about_colored_objects",
    19: "object_counting",
}


@pytest.fixture(scope="module")
def config():
    return load_config("open_llm_v2")


def test_the_published_columns_are_the_reference_table_s(config):
    assert columns(config) == [
        "IFEval Raw",
        "IFEval",
        "BBH Raw",
        "BBH",
        "MATH Lvl 5 Raw",
        "MATH Lvl 5",
        "GPQA Raw",
        "GPQA",
        "MUSR Raw",
        "MUSR",
        "MMLU-PRO Raw",
        "MMLU-PRO",
        "Average ⬆️",
    ]
    assert stderr_columns(config)[:2] == ["IFEval Raw stderr", "IFEval stderr"]
    assert stderr_columns(config)[-1] == "Average ⬆️ stderr"


def test_it_names_the_task_set_whose_harness_and_tasks_it_scores(config):
    assert config.name == "open_llm_v2"
    assert config.harness == Harness("lm-eval", "0.4.13")
    assert config.task_set == "open_llm_v2" and config.tasks == load_task_set("open_llm_v2")
    # The benchmarks are in the table's order; lm-eval runs the reference command's group in its own.
    assert [b.task for b in config.benchmarks] == [
        "leaderboard_ifeval",
        "leaderboard_bbh",
        "leaderboard_math_hard",
        "leaderboard_gpqa",
        "leaderboard_musr",
        "leaderboard_mmlu_pro",
    ]
    assert config.tasks.run_names == ("leaderboard",)
    # Subtasks and chance levels are the task set's own objects, not a second copy.
    for benchmark in config.benchmarks:
        assert benchmark.subtasks == tuple(
            config.tasks.subtask(n) for n in config.tasks.group(benchmark.task).subtasks
        )


def test_the_pinned_harness_is_the_installed_one(config):
    assert importlib.metadata.version(config.harness.package) == config.harness.version


def test_metrics_aggregation_and_normalization_follow_the_reference(config):
    rules = {
        b.key: (b.metrics, b.filter, b.aggregate, b.normalize, [s.num_choices for s in b.subtasks])
        for b in config.benchmarks
    }
    assert rules["ifeval"] == (
        ("prompt_level_strict_acc", "inst_level_strict_acc"),
        "none",
        Aggregation.SAMPLE_WEIGHTED,
        Normalization.AGGREGATE,
        [0],
    )
    assert rules["bbh"][:4] == (("acc_norm",), "none", Aggregation.MEAN, Normalization.PER_SUBTASK)
    assert rules["math_hard"] == (
        ("exact_match",),
        "none",
        Aggregation.SAMPLE_WEIGHTED,
        Normalization.AGGREGATE,
        [0] * 7,
    )
    assert rules["gpqa"] == (
        ("acc_norm",),
        "none",
        Aggregation.SAMPLE_WEIGHTED,
        Normalization.AGGREGATE,
        [4, 4, 4],
    )
    assert rules["musr"] == (("acc_norm",), "none", Aggregation.MEAN, Normalization.PER_SUBTASK, [2, 5, 3])
    assert rules["mmlu_pro"] == (("acc",), "none", Aggregation.SAMPLE_WEIGHTED, Normalization.AGGREGATE, [10])
    bbh = {s.name.removeprefix("leaderboard_bbh_"): s.num_choices for s in config.benchmark("bbh").subtasks}
    assert bbh == {name: n for n, names in BBH_CHOICES.items() for name in names.split()}
    musr = {s.name: s.num_choices for s in config.benchmark("musr").subtasks}
    assert musr == {
        "leaderboard_musr_murder_mysteries": 2,
        "leaderboard_musr_object_placements": 5,
        "leaderboard_musr_team_allocation": 3,
    }
    assert sum(len(b.subtasks) for b in config.benchmarks) == 39


def test_subtasks_match_the_installed_harness_groups(config):
    """The config's groups list exactly the tasks of lm-eval 0.4.13's groups; BBH choices = len(doc_to_choice)."""
    for benchmark in config.benchmarks:
        if not benchmark.is_group:
            continue
        group_files = [
            p
            for p in LM_EVAL_LEADERBOARD.glob("*/_*.yaml")
            if yaml.safe_load(p.read_text()).get("group") == benchmark.task
        ]
        assert group_files, benchmark.task
        group = yaml.safe_load(group_files[0].read_text())
        assert [s.name for s in benchmark.subtasks] == group["task"]
        assert [a["metric"] for a in group["aggregate_metric_list"]] == list(benchmark.metrics)
    for subtask in config.benchmark("bbh").subtasks:
        path = LM_EVAL_LEADERBOARD / "bbh_mc" / f"{subtask.name.removeprefix('leaderboard_bbh_')}.yaml"
        assert len(yaml.safe_load(path.read_text())["doc_to_choice"]) == subtask.num_choices


def test_run_settings(config):
    run = config.run
    assert run.num_fewshot is None  # as lm-eval defines it per task
    assert run.chat_template is ChatTemplate.FROM_REQUEST
    assert (run.use_chat_template(True), run.use_chat_template(False)) == (True, False)
    assert run.fewshot_as_multiturn is True
    assert run.seeds.as_harness_arg() == "0,1234,1234,1234"
    # No context cap: the reference command passes none, and the harness reads the model's maximum.
    assert run.max_length is None and run.max_length_for(32768) is None
    assert (run.batch_size, run.max_batch_size, run.log_samples) == ("auto", 64, True)
    assert run.deviations() == {}  # every setting is the reference command's


def test_a_setting_that_differs_from_the_reference_command_is_a_named_deviation(tmp_path):
    path = _mutated(tmp_path, lambda data: data["run"].update(max_length=2048, batch_size=16))
    run = load_config(str(path)).run
    assert run.deviations() == {"max_length": 2048, "batch_size": "16"}
    assert (run.max_length_for(32768), run.max_length_for(1024)) == (2048, 1024)


def test_a_bare_name_and_a_path_give_the_same_config(config):
    by_path = load_config(str(OPEN_LLM_V2))
    assert by_path == config
    assert by_path.source == str(OPEN_LLM_V2)
    assert load_config(OPEN_LLM_V2) == config


def test_the_hash_ignores_key_order_whitespace_comments_and_explicit_defaults(config, tmp_path):
    data = yaml.safe_load(OPEN_LLM_V2.read_text(encoding="utf-8"))
    data["benchmarks"][1]["filter"] = "none"  # the default, written out
    reordered = tmp_path / "open_llm_v2.yaml"
    reordered.write_text(yaml.safe_dump(data, sort_keys=True, indent=4, allow_unicode=True), encoding="utf-8")
    assert config_hash(load_config(str(reordered))) == config_hash(config)
    assert len(config_hash(config)) == 64

    data["benchmarks"][3]["metrics"] = ["acc"]
    reordered.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert config_hash(load_config(str(reordered))) != config_hash(config)

    # What the task set runs is part of it: a dataset revision, a chance level.
    tasks = config.tasks
    repinned = dataclasses.replace(
        tasks, datasets=(dataclasses.replace(tasks.datasets[0], revision="a" * 40), *tasks.datasets[1:])
    )
    assert config_hash(load_config("open_llm_v2", task_set=repinned)) != config_hash(config)
    navigate = tasks.subtask("leaderboard_bbh_navigate")
    rechanced = dataclasses.replace(
        tasks,
        subtasks=tuple(dataclasses.replace(s, num_choices=3) if s == navigate else s for s in tasks.subtasks),
    )
    assert config_hash(load_config("open_llm_v2", task_set=rechanced)) != config_hash(config)
    # ... and where the files lie is not.
    assert config_hash(
        load_config("open_llm_v2", task_set=dataclasses.replace(tasks, path=tmp_path))
    ) == config_hash(config)


def test_the_second_leaderboard_is_just_another_file():
    second = load_config(str(SECOND))
    assert columns(second) == ["GSM8K Raw", "GSM8K", "Reasoning Raw", "Reasoning", "Mean score"]
    assert [b.task for b in second.benchmarks] == ["gsm8k", "reasoning_mix"]
    assert [s.num_choices for s in second.benchmark("reasoning").subtasks] == [4, 2]
    assert second.benchmark("gsm8k").filter == "strict-match"
    assert (second.run.num_fewshot, second.run.batch_size, second.run.use_chat_template(True)) == (
        5,
        "8",
        False,
    )
    assert config_hash(second) != config_hash(load_config())


# --- validation: every error names the file and the field ----------------------------------------------


def _mutated(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(OPEN_LLM_V2.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (_set("harness", {"package": "lm-eval"}), "harness", "unknown field"),
        (_set("task_set", _DELETE), "task_set", "is required"),
        (_set("schema_version", 1), "schema_version", "must be 2"),
        (_set("benchmarks", []), "benchmarks", "non-empty list"),
        (_set("benchmarks.0.display", ""), "benchmarks[0] (ifeval).display", "non-empty"),
        (_set("benchmarks.0.num_choices", 2), "benchmarks[0] (ifeval).num_choices", "unknown field"),
        (_set("benchmarks.0.metrics", ["acc_stderr"]), "benchmarks[0] (ifeval).metrics[0]", "standard error"),
        (_set("benchmarks.0.metrics", ["acc", "acc"]), "benchmarks[0] (ifeval).metrics", "twice"),
        (_set("benchmarks.0.metric", ["acc"]), "benchmarks[0] (ifeval).metric", "unknown field"),
        (_set("benchmarks.1.aggregate", "median"), "benchmarks[1] (bbh).aggregate", "sample_weighted, mean"),
        (_set("benchmarks.1.aggregate", _DELETE), "benchmarks[1] (bbh).aggregate", "is required"),
        (
            _set("benchmarks.1.subtasks", [{"task": "x", "num_choices": 2}]),
            "benchmarks[1] (bbh).subtasks",
            "unknown field",
        ),
        (_set("benchmarks.1.normalize", "aggregate"), "benchmarks[1] (bbh).normalize", "one chance level"),
        (
            _set("benchmarks.3.task", "leaderboard_gpqa_main"),
            "benchmarks[3] (gpqa).task",
            "not a group of task set",
        ),
        (
            _set("benchmarks.3.task", "leaderboard_nope"),
            "benchmarks[3] (gpqa).task",
            "its groups: leaderboard_mmlu_pro",
        ),
        (_set("benchmarks.5", _DELETE), "benchmarks", "runs leaderboard_mmlu_pro, which no benchmark scores"),
        (
            _set("benchmarks.4.task", "leaderboard_bbh"),
            "benchmarks[4] (musr).task",
            "already scored by benchmark 'bbh'",
        ),
        (_set("benchmarks.3.key", "bbh"), "benchmarks[3] (bbh).key", "another benchmark"),
        (_set("benchmarks.3.display", "BBH"), "benchmarks[3] (gpqa).display", "published twice"),
        (_set("average.column", "GPQA Raw"), "average.column", "also a benchmark column"),
        (_set("average.method", "median"), "average.method", "plain mean"),
        (_set("run.seeds.torch", "1234"), "run.seeds.torch", "integer"),
        (_set("run.batch_size", "big"), "run.batch_size", "auto or a positive integer"),
        (_set("run.num_fewshot", "lots"), "run.num_fewshot", "task_default"),
        (_set("run.chat_template", "sometimes"), "run.chat_template", "from_request"),
        (_set("run.log_samples", "yes please"), "run.log_samples", "true or false"),
        (_set("run", []), "run", "mapping"),
    ],
)
def test_an_invalid_config_names_the_file_and_the_field(tmp_path, change, field, problem):
    path = _mutated(tmp_path, change)
    with pytest.raises(LeaderboardConfigError) as caught:
        load_config(str(path))
    assert caught.value.message.startswith(f"{path}: field '{field}':")
    assert problem in caught.value.message
    assert caught.value.code == "leaderboard_config"


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        OPEN_LLM_V2.read_text(encoding="utf-8").replace("task_set:", "name: x\ntask_set:"), "utf-8"
    )
    with pytest.raises(LeaderboardConfigError, match=r"dup\.yaml: not valid YAML: duplicate key 'name'"):
        load_config(str(path))


def test_unreadable_configs_are_clear_errors(tmp_path):
    with pytest.raises(
        LeaderboardConfigError,
        match=r"no leaderboard config named 'nope'.*available: alpaca_eval_2, arena, open_llm_v2, pandalm",
    ):
        load_config("nope")
    with pytest.raises(LeaderboardConfigError, match="not a leaderboard name"):
        load_config("Open LLM")
    with pytest.raises(LeaderboardConfigError, match=r"missing\.yaml: cannot read"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(LeaderboardConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(str(bad))
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(LeaderboardConfigError, match=r"bad\.yaml: field '\(top level\)': must be a mapping"):
        load_config(str(bad))


def test_a_bare_name_must_match_the_name_inside(tmp_path, monkeypatch):
    (tmp_path / "other.yaml").write_text(OPEN_LLM_V2.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    with pytest.raises(
        LeaderboardConfigError, match="field 'name': is 'open_llm_v2', but the file is named 'other'"
    ):
        load_config("other")
