"""Published scores from lm-eval results, checked against arithmetic done by hand on the fixture's numbers.

tests/fixtures/results/open_llm_v2_results.json is a complete results_<time>.json in the harness's format
(39 subtasks, group entries, "N/A" standard errors, n-samples, configs, ...). Every expected value below is
written out over the literal numbers of that file; none calls the code under test.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from backend.cli.normalize import normalize as normalize_command
from backend.errors import IncompleteResults, ResultsFormatError
from backend.leaderboards.config import columns, load_config, stderr_columns
from backend.leaderboards.harness_results import load_results, parse_results
from backend.leaderboards.normalize import norm, normalize, score_benchmarks, standard_errors

FIXTURES = Path(__file__).parents[1] / "fixtures"
RESULTS_FILE = FIXTURES / "results" / "open_llm_v2_results.json"
SECOND_CONFIG = FIXTURES / "leaderboards" / "two_benchmarks.yaml"
SECOND_RESULTS = FIXTURES / "results" / "two_benchmarks_results.json"
GROUPS = ("leaderboard", "leaderboard_bbh", "leaderboard_gpqa", "leaderboard_math_hard", "leaderboard_musr")

# --- the complete fixture, by hand ---------------------------------------------------------------------

# IFEval: one generative task (lb 0); raw = mean of the strict prompt- and instruction-level accuracies.
IFEVAL_RAW = (0.4805914972273567 + 0.6115107913669064) / 2  # (260/541 + 510/834) / 2 = 0.54605
IFEVAL = (IFEVAL_RAW - 0) / (1 - 0) * 100  # 54.61

# BBH: raw = plain mean of the 24 acc_norm; score = plain mean of each normalized with lb = 1/num_choices.
BBH_RAW = (
    0.836
    + 0.6042780748663101
    + 0.48
    + 0.6
    + 0.54
    + 0.08
    + 0.72
    + 0.4
    + 0.36
    + 0.64
    + 0.68
    + 0.62
    + 0.38
    + 0.5
    + 0.5
    + 0.56
    + 0.44
    + 0.6797752808988764
    + 0.76
    + 0.3
    + 0.2
    + 0.14
    + 0.34
    + 0.52
) / 24  # 0.4950
BBH = (
    (0.836 - 1 / 2) / (1 - 1 / 2) * 100  # boolean_expressions
    + (0.6042780748663101 - 1 / 2) / (1 - 1 / 2) * 100  # causal_judgement
    + (0.48 - 1 / 6) / (1 - 1 / 6) * 100  # date_understanding
    + (0.6 - 1 / 3) / (1 - 1 / 3) * 100  # disambiguation_qa
    + (0.54 - 1 / 2) / (1 - 1 / 2) * 100  # formal_fallacies
    + 0  # geometric_shapes: 0.08 is below chance (1/11 = 0.0909): clipped to 0
    + (0.72 - 1 / 2) / (1 - 1 / 2) * 100  # hyperbaton
    + (0.4 - 1 / 5) / (1 - 1 / 5) * 100  # logical_deduction_five_objects
    + (0.36 - 1 / 7) / (1 - 1 / 7) * 100  # logical_deduction_seven_objects
    + (0.64 - 1 / 3) / (1 - 1 / 3) * 100  # logical_deduction_three_objects
    + (0.68 - 1 / 6) / (1 - 1 / 6) * 100  # movie_recommendation
    + (0.62 - 1 / 2) / (1 - 1 / 2) * 100  # navigate
    + (0.38 - 1 / 19) / (1 - 1 / 19) * 100  # object_counting
    + (0.5 - 1 / 5) / (1 - 1 / 5) * 100  # penguins_in_a_table
    + (0.5 - 1 / 18) / (1 - 1 / 18) * 100  # reasoning_about_colored_objects
    + (0.56 - 1 / 6) / (1 - 1 / 6) * 100  # ruin_names
    + (0.44 - 1 / 6) / (1 - 1 / 6) * 100  # salient_translation_error_detection
    + (0.6797752808988764 - 1 / 2) / (1 - 1 / 2) * 100  # snarks
    + (0.76 - 1 / 2) / (1 - 1 / 2) * 100  # sports_understanding
    + (0.3 - 1 / 4) / (1 - 1 / 4) * 100  # temporal_sequences
    + 0  # tracking_shuffled_objects_five_objects: 0.2 is exactly chance (1/5)
    + 0  # tracking_shuffled_objects_seven_objects: 0.14 is below chance (1/7 = 0.1429)
    + (0.34 - 1 / 3) / (1 - 1 / 3) * 100  # tracking_shuffled_objects_three_objects
    + (0.52 - 1 / 2) / (1 - 1 / 2) * 100  # web_of_lies
) / 24  # 29.10

# MATH Lvl 5: exact_match weighted by n-samples (307, 123, 132, 280, 154, 193, 135 = 1324), lb 0.
MATH_RAW = (
    0.19543973941368079 * 307
    + 0.12195121951219512 * 123
    + 0.07575757575757576 * 132
    + 0.04285714285714286 * 280
    + 0.12987012987012986 * 154
    + 0.25906735751295334 * 193
    + 0.037037037037037035 * 135
) / (307 + 123 + 132 + 280 + 154 + 193 + 135)  # = 172/1324 = 0.1299
MATH = MATH_RAW * 100  # 12.99

# GPQA: acc_norm weighted by n-samples (diamond 198, extended 546, main 448), lb 1/4.
GPQA_RAW = (0.3333333333333333 * 198 + 0.29853479853479853 * 546 + 0.29017857142857145 * 448) / (
    198 + 546 + 448
)  # = 359/1192 = 0.3012
GPQA = (GPQA_RAW - 1 / 4) / (1 - 1 / 4) * 100  # 6.82

# MuSR: plain mean of acc_norm; each normalized (murder_mysteries 2, object_placements 5, team_allocation 3).
MUSR_RAW = (0.56 + 0.3125 + 0.4) / 3  # 0.4242
MUSR = ((0.56 - 1 / 2) / (1 / 2) * 100 + (0.3125 - 1 / 5) / (4 / 5) * 100 + (0.4 - 1 / 3) / (2 / 3) * 100) / 3
# = (12 + 14.0625 + 10) / 3 = 12.02

# MMLU-Pro: acc, lb 1/10.
MMLU_PRO_RAW = 0.30335771276595747  # 3650/12032
MMLU_PRO = (MMLU_PRO_RAW - 1 / 10) / (1 - 1 / 10) * 100  # 22.60

EXPECTED = {
    "IFEval Raw": IFEVAL_RAW,
    "IFEval": IFEVAL,
    "BBH Raw": BBH_RAW,
    "BBH": BBH,
    "MATH Lvl 5 Raw": MATH_RAW,
    "MATH Lvl 5": MATH,
    "GPQA Raw": GPQA_RAW,
    "GPQA": GPQA,
    "MUSR Raw": MUSR_RAW,
    "MUSR": MUSR,
    "MMLU-PRO Raw": MMLU_PRO_RAW,
    "MMLU-PRO": MMLU_PRO,
    "Average ⬆️": (IFEVAL + BBH + MATH + GPQA + MUSR + MMLU_PRO) / 6,  # 23.02
}
# The same, rounded as a leaderboard would display them: a check on the expressions above.
DISPLAYED = {
    "IFEval": 54.61,
    "BBH": 29.10,
    "MATH Lvl 5": 12.99,
    "GPQA": 6.82,
    "MUSR": 12.02,
    "MMLU-PRO": 22.60,
    "Average ⬆️": 23.02,
}


@pytest.fixture(scope="module")
def config():
    return load_config("open_llm_v2")


@pytest.fixture
def data():
    return json.loads(RESULTS_FILE.read_text(encoding="utf-8"))


def _assert_row(row, expected):
    assert list(row) == list(expected)
    for column, value in expected.items():
        if value is None:
            assert row[column] is None, column
        else:
            assert row[column] == pytest.approx(value, rel=1e-12, abs=1e-12), column


def test_the_fixture_is_a_complete_results_file_in_the_harness_format(config, data):
    subtasks = [s.name for b in config.benchmarks for s in b.subtasks]
    assert len(subtasks) == 39 and set(subtasks) <= set(data["results"]) == set(subtasks) | set(GROUPS)
    assert set(data["groups"]) == set(GROUPS) and set(data["n-samples"]) == set(subtasks)
    assert data["results"]["leaderboard_ifeval"]["inst_level_strict_acc_stderr,none"] == "N/A"
    assert isinstance(data["total_evaluation_time_seconds"], str)
    for key in (
        "group_subtasks",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "config",
        "task_hashes",
    ):
        assert data[key], key


def test_every_published_column_of_the_complete_fixture(config):
    row = normalize(load_results(RESULTS_FILE), config)
    assert list(row) == columns(config)
    _assert_row(row, EXPECTED)
    assert {c: round(row[c], 2) for c in DISPLAYED} == DISPLAYED  # type: ignore[arg-type]
    assert all(isinstance(v, float) for v in row.values())


def test_the_reference_documented_examples(config):
    # GPQA raw 0.6 -> 46.67, whatever the subtask sizes; and from the group entry alone.
    gpqa = {
        "results": {
            "leaderboard_gpqa_diamond": {"acc_norm,none": 0.6},
            "leaderboard_gpqa_extended": {"acc_norm,none": 0.6},
            "leaderboard_gpqa_main": {"acc_norm,none": 0.6},
        },
        "n-samples": {
            "leaderboard_gpqa_diamond": {"effective": 198},
            "leaderboard_gpqa_extended": {"effective": 546},
            "leaderboard_gpqa_main": {"effective": 448},
        },
    }
    row = normalize(gpqa, config, allow_missing=True)
    assert row["GPQA Raw"] == pytest.approx(0.6)
    assert row["GPQA"] == pytest.approx((0.6 - 0.25) / 0.75 * 100)
    assert round(row["GPQA"], 2) == 46.67  # type: ignore[arg-type]
    group_only = normalize(
        {"results": {"leaderboard_gpqa": {"acc_norm,none": 0.6}}}, config, allow_missing=True
    )
    assert round(group_only["GPQA"], 2) == 46.67  # type: ignore[arg-type]

    # MuSR subtasks 0.7 / 0.4 / 0.6 -> (40 + 25 + 40) / 3 = 35.00
    musr = {
        "results": {
            "leaderboard_musr_murder_mysteries": {"acc_norm,none": 0.7},
            "leaderboard_musr_object_placements": {"acc_norm,none": 0.4},
            "leaderboard_musr_team_allocation": {"acc_norm,none": 0.6},
        }
    }
    row = normalize(musr, config, allow_missing=True)
    assert round(row["MUSR"], 2) == 35.00  # type: ignore[arg-type]
    assert row["MUSR Raw"] == pytest.approx((0.7 + 0.4 + 0.6) / 3)


def test_norm_is_the_reference_formula():
    assert norm(0.6, 4) == pytest.approx(46.666666666666664)
    assert norm(0.25, 4) == 0.0
    assert norm(0.1, 4) == 0.0  # below chance: clipped, never negative
    assert norm(1.0, 10) == pytest.approx(100.0)
    assert norm(0.3, 0) == pytest.approx(30.0)  # generative: lb 0


def test_group_entries_change_nothing(config, data):
    with_groups = normalize(data, config)
    for name in GROUPS:
        del data["results"][name]
    del data["groups"]
    assert normalize(data, config) == with_groups


def test_group_entries_stand_in_only_for_absent_sample_weighted_subtasks(config, data):
    for task in list(data["results"]):
        if task.startswith(("leaderboard_gpqa_", "leaderboard_math_")) and task not in GROUPS:
            del data["results"][task]
    _assert_row(normalize(data, config), EXPECTED)
    scores = score_benchmarks(data, config)
    assert scores["gpqa"].from_group_entry and scores["math_hard"].from_group_entry  # type: ignore[union-attr]
    assert not scores["bbh"].from_group_entry  # type: ignore[union-attr]

    # BBH's score normalizes each subtask: its group entry cannot replace a missing one.
    del data["results"]["leaderboard_bbh_snarks"]
    with pytest.raises(
        IncompleteResults,
        match=r"'BBH' lacks 1 of its 24 subtasks: leaderboard_bbh_snarks \(its group entry 'leaderboard_bbh' cannot",
    ):
        normalize(data, config)


def test_the_dict_simple_evaluate_returns_gives_the_same_row(config, data):
    returned = {
        key: data[key]
        for key in (
            "results",
            "groups",
            "group_subtasks",
            "configs",
            "versions",
            "n-shot",
            "higher_is_better",
        )
    }
    returned["n-samples"] = data["n-samples"]
    returned["config"] = data["config"]
    returned["samples"] = {"leaderboard_ifeval": [{"doc_id": 0, "resps": [["..."]], "metrics": ["acc"]}]}
    _assert_row(normalize(returned, config), EXPECTED)


def test_numbers_written_as_strings_are_read(config, data):
    for entry in data["results"].values():
        for key, value in entry.items():
            if "," in key and isinstance(value, float):
                entry[key] = repr(value)
    data["n-samples"] = {t: {k: str(v) for k, v in n.items()} for t, n in data["n-samples"].items()}
    _assert_row(normalize(data, config), EXPECTED)


def test_sample_counts_fall_back_to_original_then_sample_len(config, data):
    for counts in data["n-samples"].values():
        del counts["effective"]
    _assert_row(normalize(data, config), EXPECTED)
    del data["n-samples"]
    _assert_row(normalize(data, config), EXPECTED)
    # Without a count, lm-eval's group entry (the sample-weighted value it computed) stands in, and says so.
    del data["results"]["leaderboard_gpqa_main"]["sample_len"]
    gpqa = score_benchmarks(data, config)["gpqa"]
    assert gpqa is not None and gpqa.raw == data["results"]["leaderboard_gpqa"]["acc_norm,none"]
    assert "no sample counts for leaderboard_gpqa_main" in (gpqa.from_group_entry or "")
    _assert_row(normalize(data, config), EXPECTED)
    # Only where the harness's own number is missing too is it an error.
    del data["results"]["leaderboard_gpqa"], data["groups"]["leaderboard_gpqa"]
    with pytest.raises(ResultsFormatError, match=r"no sample count for task 'leaderboard_gpqa_main'"):
        normalize(data, config)


def test_a_details_card_results_block_is_scored_from_its_group_entries(tmp_path, data):
    """The public details cards publish only the "results" block: no n-samples, no sample_len. GPQA and
    MATH Lvl 5 are sample-weighted: their group entries are the harness's weighted values, used and named."""
    block = {
        "results": {
            task: {k: v for k, v in entry.items() if k != "sample_len"}
            for task, entry in data["results"].items()
        }
    }
    path = tmp_path / "card_results.json"
    path.write_text(json.dumps(block), encoding="utf-8")
    result = _invoke(path)
    assert result.exit_code == 0, result.output
    _assert_row(json.loads(result.stdout), EXPECTED)
    notes = result.stderr.splitlines()
    assert len(notes) == 2, notes
    assert any(n.startswith("note: GPQA: no sample counts") and "'leaderboard_gpqa'" in n for n in notes)
    assert any(
        n.startswith("note: MATH Lvl 5: no sample counts") and "'leaderboard_math_hard'" in n for n in notes
    )


# --- missing benchmarks: an error by default, None columns on request ------------------------------------


def test_a_missing_benchmark_is_an_error_by_default(config, data):
    del data["results"]["leaderboard_mmlu_pro"]
    with pytest.raises(
        IncompleteResults,
        match=r"no results for benchmark 'MMLU-PRO' \(none of leaderboard_mmlu_pro\): run it",
    ) as caught:
        normalize(data, config)
    assert caught.value.code == "results_incomplete"


def test_allow_missing_gives_none_columns_and_no_average(config, data):
    del data["results"]["leaderboard_mmlu_pro"]
    for task in [t for t in data["results"] if t.startswith("leaderboard_gpqa")]:
        del data["results"][task]
    del data["groups"]["leaderboard_gpqa"]
    row = normalize(data, config, allow_missing=True)
    expected = dict(EXPECTED)
    for column in ("GPQA Raw", "GPQA", "MMLU-PRO Raw", "MMLU-PRO", "Average ⬆️"):
        expected[column] = None
    _assert_row(row, expected)
    errors = standard_errors(data, config, allow_missing=True)
    assert errors["GPQA stderr"] is None and errors["MMLU-PRO Raw stderr"] is None


def test_a_partial_benchmark_is_an_error_even_when_missing_ones_are_allowed(config, data):
    del data["results"]["leaderboard_musr_team_allocation"]
    with pytest.raises(
        IncompleteResults, match="'MUSR' lacks 1 of its 3 subtasks: leaderboard_musr_team_allocation"
    ):
        normalize(data, config, allow_missing=True)


# --- standard errors -----------------------------------------------------------------------------------


def test_standard_errors_by_hand(config, data):
    errors = standard_errors(data, config)
    assert list(errors) == stderr_columns(config)
    # IFEval: lm-eval gives "N/A" for inst_level_strict_acc, so IFEval's and the average's are unknown.
    assert errors["IFEval Raw stderr"] is None and errors["IFEval stderr"] is None
    assert errors["Average ⬆️ stderr"] is None
    # GPQA: independent subtasks weighted by size, then the slope of norm, 100 / (1 - 1/4).
    gpqa_raw = math.sqrt(
        (198 * 0.033586181457325226) ** 2
        + (546 * 0.01960208623041336) ** 2
        + (448 * 0.021466115440571226) ** 2
    ) / (198 + 546 + 448)
    assert errors["GPQA Raw stderr"] == pytest.approx(gpqa_raw, rel=1e-12)
    assert errors["GPQA stderr"] == pytest.approx(gpqa_raw * 100 / (1 - 1 / 4), rel=1e-12)
    # MuSR: each subtask's stderr scaled by its own slope, plain mean of three.
    musr = (
        math.sqrt(
            (0.03145724452223568 * 100 / (1 - 1 / 2)) ** 2
            + (0.0290262727508015 * 100 / (1 - 1 / 5)) ** 2
            + (0.031046021028253313 * 100 / (1 - 1 / 3)) ** 2
        )
        / 3
    )
    assert errors["MUSR stderr"] == pytest.approx(musr, rel=1e-12)
    assert errors["MUSR Raw stderr"] == pytest.approx(
        math.sqrt(0.03145724452223568**2 + 0.0290262727508015**2 + 0.031046021028253313**2) / 3, rel=1e-12
    )
    assert errors["MMLU-PRO stderr"] == pytest.approx(0.00419113426445496 * 100 / (1 - 1 / 10), rel=1e-12)

    # With an instruction-level stderr, IFEval's is the mean of its two metrics' (an upper bound).
    data["results"]["leaderboard_ifeval"]["inst_level_strict_acc_stderr,none"] = 0.016
    errors = standard_errors(data, config)
    assert errors["IFEval Raw stderr"] == pytest.approx((0.021500357879025087 + 0.016) / 2, rel=1e-12)
    assert errors["IFEval stderr"] == pytest.approx((0.021500357879025087 + 0.016) / 2 * 100, rel=1e-12)
    assert errors["Average ⬆️ stderr"] is not None


# --- a second leaderboard: the same code, another config -------------------------------------------------


def test_the_second_leaderboard_scores_from_its_own_config(data):
    second = load_config(str(SECOND_CONFIG))
    row = normalize(load_results(SECOND_RESULTS), second)
    reasoning = (1172 * (0.55 - 1 / 4) / (1 - 1 / 4) * 100 + 1267 * (0.75 - 1 / 2) / (1 - 1 / 2) * 100) / (
        1172 + 1267
    )  # (1172 * 40 + 1267 * 50) / 2439 = 45.19
    _assert_row(
        row,
        {
            "GSM8K Raw": 0.45,  # exact_match under the strict-match filter, not flexible-extract's 0.5
            "GSM8K": 0.45 * 100,
            "Reasoning Raw": (0.55 * 1172 + 0.75 * 1267) / (1172 + 1267),  # acc, not acc_norm
            "Reasoning": reasoning,
            "Mean score": (45 + reasoning) / 2,
        },
    )
    errors = standard_errors(load_results(SECOND_RESULTS), second)
    gsm8k = 0.013703449273924976 * 100
    reasoning_se = (
        math.sqrt(
            (1172 * 0.014538150289301924 * 100 / (3 / 4)) ** 2
            + (1267 * 0.012169809587780887 * 100 / (1 / 2)) ** 2
        )
        / 2439
    )
    assert errors["GSM8K stderr"] == pytest.approx(gsm8k, rel=1e-12)
    assert errors["Reasoning stderr"] == pytest.approx(reasoning_se, rel=1e-12)
    assert errors["Mean score stderr"] == pytest.approx(math.sqrt(gsm8k**2 + reasoning_se**2) / 2, rel=1e-12)

    # Its results are no open_llm_v2 results, and the reverse.
    with pytest.raises(IncompleteResults, match="no results for benchmark 'IFEval'"):
        normalize(load_results(SECOND_RESULTS), load_config())
    with pytest.raises(IncompleteResults, match="no results for benchmark 'GSM8K'"):
        normalize(data, second)


# --- malformed results: clear errors naming the task and the metric --------------------------------------


@pytest.mark.parametrize(
    ("task", "key", "value", "message"),
    [
        (
            "leaderboard_gpqa_main",
            "acc_norm,none",
            "N/A",
            r"task 'leaderboard_gpqa_main', metric 'acc_norm,none' is 'N/A', not a number",
        ),
        (
            "leaderboard_ifeval",
            "inst_level_strict_acc,none",
            None,
            r"task 'leaderboard_ifeval' has no metric 'inst_level_strict_acc,none' \(it has: ",
        ),
        (
            "leaderboard_mmlu_pro",
            "acc,none",
            "high",
            r"task 'leaderboard_mmlu_pro', metric 'acc,none' is 'high'",
        ),
        (
            "leaderboard_mmlu_pro",
            "acc,none",
            30.3,
            r"metric 'acc,none' is 30.3: leaderboard scores are fractions",
        ),
        ("leaderboard_mmlu_pro", "acc,none", float("nan"), r"metric 'acc,none' is nan, not a number"),
        ("leaderboard_mmlu_pro", "acc,none", True, r"metric 'acc,none' is True, not a number"),
    ],
)
def test_a_bad_score_names_the_task_and_metric(config, data, task, key, value, message):
    if value is None:
        del data["results"][task][key]
    else:
        data["results"][task][key] = value
    with pytest.raises(ResultsFormatError, match=message) as caught:
        normalize(data, config)
    assert caught.value.code == "results_format"


def test_unknown_fields_and_odd_stderrs_are_tolerated(config, data):
    data["results"]["leaderboard_mmlu_pro"]["acc_stderr,none"] = "N/A"
    data["results"]["leaderboard_mmlu_pro"]["brand_new_metric,none"] = {"nested": True}
    data["results"]["leaderboard_mmlu_pro"]["acc,none"] = MMLU_PRO_RAW
    data["something_new"] = [1, 2, 3]
    data["results"]["a_task_nobody_asked_for"] = "not even an object"
    _assert_row(normalize(data, config), EXPECTED)
    assert standard_errors(data, config)["MMLU-PRO stderr"] is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "expected a JSON object with a 'results' field, got list"),
        ({"version": 1}, "no 'results' object: this is not an lm-eval results file"),
        ({"results": []}, "no 'results' object"),
        ({"results": {"leaderboard_mmlu_pro": [0.3]}}, r"results\['leaderboard_mmlu_pro'\] is not an object"),
    ],
)
def test_documents_that_are_not_results(config, document, message):
    with pytest.raises(ResultsFormatError, match=message):
        normalize(parse_results(document), config, allow_missing=True)


def test_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("<html>rate limited</html>", encoding="utf-8")
    with pytest.raises(
        ResultsFormatError, match=r"results\.json: not JSON \(Expecting value at line 1, column 1\)"
    ):
        load_results(path)
    with pytest.raises(ResultsFormatError, match="cannot read the results file"):
        load_results(tmp_path / "absent.json")


# --- the CLI -------------------------------------------------------------------------------------------


def _invoke(*args: str):
    return CliRunner().invoke(normalize_command, [str(a) for a in args])


def test_cli_prints_one_json_object_with_the_published_columns():
    result = _invoke(RESULTS_FILE)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    _assert_row(row, EXPECTED)
    assert result.stderr == ""


def test_cli_takes_another_config_and_adds_standard_errors_on_request():
    result = _invoke(SECOND_RESULTS, "--config", SECOND_CONFIG, "--stderr")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert list(row) == columns(load_config(str(SECOND_CONFIG))) + stderr_columns(
        load_config(str(SECOND_CONFIG))
    )
    assert row["GSM8K"] == pytest.approx(45.0)


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "results_2025-01-01T00-00-00.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_cli_errors_exit_1_with_the_error_shape(tmp_path, data):
    not_json = tmp_path / "results.json"
    not_json.write_text("{truncated", encoding="utf-8")
    result = _invoke(not_json)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error [results_format]: {not_json}: not JSON")
    assert result.stdout == ""

    broken = copy.deepcopy(data)
    broken["results"]["leaderboard_gpqa_main"]["acc_norm,none"] = "N/A"
    result = _invoke(_write(tmp_path, broken))
    assert result.exit_code == 1
    assert result.stderr.startswith("error [results_format]: ")
    assert "task 'leaderboard_gpqa_main', metric 'acc_norm,none' is 'N/A'" in result.stderr

    del data["results"]["leaderboard_mmlu_pro"]
    path = _write(tmp_path, data)
    result = _invoke(path)
    assert result.exit_code == 1
    assert result.stderr.startswith("error [results_incomplete]: ")
    assert "no results for benchmark 'MMLU-PRO'" in result.stderr

    result = _invoke(path, "--allow-missing")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["Average ⬆️"] is None

    result = _invoke(RESULTS_FILE, "--config", "no_such_board")
    assert result.exit_code == 1
    assert result.stderr.startswith("error [leaderboard_config]: no leaderboard config named 'no_such_board'")


def test_cli_a_missing_file_is_a_usage_error(tmp_path):
    result = _invoke(tmp_path / "absent.json")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
