"""Style control of the arena's ratings: the fit against a maximum-likelihood fit written independently here
(scikit-learn's unpenalised logistic regression on the explicit design matrix), the recovery of known strengths
when longer answers win more, the counts from conv_metadata and from the conversations, the refusals, and
`leaderboard arena ratings --style-control`."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from backend.arena.battles import Battles, read_battles
from backend.arena.ratings import fit_ratings
from backend.arena.style import fit_style_ratings
from backend.arena.style_counts import COLUMNS, FEATURES, markdown_counts
from backend.cli.main import cli
from backend.errors import BattlesInvalid, InvalidInput

SIDES = {
    "length": ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    "headers": ("header_count_a", "header_count_b"),
    "lists": ("list_count_a", "list_count_b"),
    "bold": ("bold_count_a", "bold_count_b"),
}


def _metadata(a: list[int], b: list[int]) -> dict:
    """conv_metadata as the public releases write it: markdown counts as records of their kinds."""
    return {
        "sum_assistant_a_tokens": a[0],
        "sum_assistant_b_tokens": b[0],
        "header_count_a": {"h1": a[1], "h2": 0, "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "header_count_b": {"h1": 0, "h2": b[1], "h3": 0, "h4": 0, "h5": 0, "h6": 0},
        "list_count_a": {"ordered": a[2], "unordered": 0},
        "list_count_b": {"ordered": 0, "unordered": b[2]},
        "bold_count_a": {"**": a[3], "__": 0},
        "bold_count_b": {"**": b[3], "__": 0},
        "turns": 1,  # a field style control does not read
    }


def _table(
    strengths: dict[str, float],
    verbosity: dict[str, float],
    n: int,
    seed: int,
    length_effect: float,
    tie_share: float = 0.0,
) -> list[dict]:
    """Battles of random pairs whose answers' lengths scale with the model's verbosity; a wins with
    P = 1 / (1 + exp(-(ln10 (r_a - r_b) + length_effect z))), z the z-scored normalised length difference,
    exactly the model style control fits. Markdown counts are drawn independently of the outcome."""
    rng = random.Random(seed)
    names = sorted(strengths)
    drawn = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        sides = [
            [int(300 * verbosity[m] * rng.lognormvariate(0, 0.3)), *(rng.randrange(4) for _ in range(3))]
            for m in (a, b)
        ]
        drawn.append((a, b, sides))
    ratios = np.array([(sa[0] - sb[0]) / (sa[0] + sb[0] + 1) for _, _, (sa, sb) in drawn])
    z = (ratios - ratios.mean()) / ratios.std()
    records = []
    for (a, b, (sa, sb)), zk in zip(drawn, z, strict=True):
        if rng.random() < tie_share:
            winner = "tie"
        else:
            eta = math.log(10) * (strengths[a] - strengths[b]) + length_effect * zk
            winner = "model_a" if rng.random() < 1 / (1 + math.exp(-eta)) else "model_b"
        records.append({"model_a": a, "model_b": b, "winner": winner, "conv_metadata": _metadata(sa, sb)})
    return records


def _independent_fit(records: list[dict]) -> tuple[dict[str, float], list[float]]:
    """The public arena's construction, written out: a row per battle and outcome, +ln10 in model_a's column
    and -ln10 in model_b's, then the four features, each (a - b) / (a + b + 1) of the counts (a count given
    as a record is its values' sum) z-scored over the battles; y = model_a won, weight 1 for a win and 1/2
    for each side of a tie; no intercept, no penalty. One model's column is left out (its strength fixed at
    0), then the ratings are centred on 1000."""
    names = sorted({r["model_a"] for r in records} | {r["model_b"] for r in records})
    column = {name: k for k, name in enumerate(names)}

    def total(value: int | dict) -> int:
        return value if isinstance(value, int) else sum(value.values())

    ratios = np.array(
        [
            [
                (total(r["conv_metadata"][fa]) - total(r["conv_metadata"][fb]))
                / (total(r["conv_metadata"][fa]) + total(r["conv_metadata"][fb]) + 1)
                for fa, fb in SIDES.values()
            ]
            for r in records
        ]
    )
    features = (ratios - ratios.mean(axis=0)) / ratios.std(axis=0)
    rows, labels, weights = [], [], []
    for r, x_style in zip(records, features, strict=True):
        x = np.zeros(len(names))
        x[column[r["model_a"]]] = math.log(10)
        x[column[r["model_b"]]] = -math.log(10)
        share_a = {"model_a": 1.0, "model_b": 0.0}.get(r["winner"], 0.5)
        for label, weight in ((1, share_a), (0, 1.0 - share_a)):
            if weight:
                rows.append(np.concatenate([x[1:], x_style]))
                labels.append(label)
                weights.append(weight)
    model = LogisticRegression(
        C=np.inf, fit_intercept=False, solver="newton-cholesky", tol=1e-14, max_iter=500
    )
    model.fit(np.array(rows), np.array(labels), sample_weight=np.array(weights))
    m = len(names) - 1
    coef = np.concatenate([[0.0], model.coef_[0][:m]])
    ratings = 1000 + 400 * (coef - coef.mean())
    return dict(zip(names, ratings.tolist(), strict=True)), model.coef_[0][m:].tolist()


STRENGTHS = {"alpha": 0.0, "beta": 0.3, "gamma": -0.2, "delta": 0.55, "eps": 0.1, "zeta": 0.2}
VERBOSE = {"alpha": 1.0, "beta": 2.5, "gamma": 1.0, "delta": 0.6, "eps": 1.5, "zeta": 1.0}
FIXED = _table(STRENGTHS, VERBOSE, 1_500, seed=7, length_effect=0.8, tie_share=0.2)


def _by_model(fit) -> dict[str, float]:
    return {m.model: m.rating for m in fit.models}


def test_the_fit_is_the_maximum_likelihood_fit_of_an_independent_logistic_regression():
    fit = fit_style_ratings(Battles.from_records(FIXED, style=True), bootstrap=0)
    ratings, coefficients = _independent_fit(FIXED)
    ours = _by_model(fit)
    assert ours.keys() == ratings.keys()
    for name, rating in ratings.items():
        assert ours[name] == pytest.approx(rating, abs=1e-6), name
    assert fit.style is not None
    assert [c.feature for c in fit.style] == list(FEATURES)
    assert [c.coefficient for c in fit.style] == pytest.approx(coefficients, abs=1e-8)
    assert all(c.lower is None and c.upper is None for c in fit.style)  # no bootstrap
    assert fit.converged and fit.warnings == ()
    # Style moves the ratings: the fit without it is another fit.
    plain = _by_model(fit_ratings(Battles.from_records(FIXED), bootstrap=0))
    assert max(abs(plain[k] - ours[k]) for k in ours) > 5


def test_a_length_bias_is_removed_and_the_strengths_recovered_within_the_intervals():
    truth = {f"m{k}": 0.15 * k for k in range(8)}  # 0 to 420 rating points apart
    # The two weakest models answer at four times the others' length, and longer answers win more.
    verbosity = {name: 4.0 if name in ("m0", "m1") else 1.0 for name in truth}
    battles = Battles.from_records(_table(truth, verbosity, 20_000, seed=3, length_effect=0.6), style=True)
    fit = fit_style_ratings(battles, bootstrap=100, seed=0)
    plain = fit_ratings(battles, bootstrap=100, seed=0)
    mean = sum(truth.values()) / len(truth)
    expected = {name: 1000 + 400 * (value - mean) for name, value in truth.items()}

    outside = 0
    for m in fit.models:
        assert m.rating_lower is not None and m.rating_upper is not None
        half = (m.rating_upper - m.rating_lower) / 2
        assert 2 < half < 30, m
        outside += not (m.rating_lower <= expected[m.model] <= m.rating_upper)
        assert abs(m.rating - expected[m.model]) < 2 * half, m
    assert outside <= 1  # 95% intervals: one of eight may miss
    assert [m.model for m in fit.models] == [f"m{k}" for k in reversed(range(8))]
    # Without style control the verbose models are rated far above their strength, outside their intervals.
    for m in plain.models:
        if m.model in ("m0", "m1"):
            assert m.rating_lower is not None and m.rating_lower > expected[m.model] + 20, m
    assert plain.style is None

    assert fit.style is not None
    length = fit.style[0]
    assert length.feature == "length" and length.lower is not None and length.upper is not None
    assert 0 < length.lower <= 0.6 <= length.upper
    for other in fit.style[1:]:  # markdown counts drawn independently of the outcome: 0, give or take ~0.015
        assert other.coefficient is not None and abs(other.coefficient) < 0.08, other


#: Two assistant turns: headers h1, h2, h6 (not "####### seven", "#tight" or the user's), list items
#: "1. ", "  2. ", "- ", "* ", "+ " (not "3)" or "-tight"), bold **two**, __three__, **four** on one line
#: and ** ** (a space is text); the code block's lines are not counted.
USER = "# my question\n- with a list\n**bold**"
ANSWER_1 = (
    "# Title\nSome text with **two** and __three__ words.\n## Part\n1. first\n  2. second\n3) not a list\n"
)
ANSWER_2 = (
    "###### six\n####### seven\n#tight\n- dash\n* star\n+ plus\n-tight\n**four** and ** **\n"
    "```python\n# a comment\n- not a list\n**not bold**\n```\nend"
)
HEADERS, LISTS, BOLD = 3, 5, 4


def test_the_markdown_is_counted_as_the_public_arena_counts_it():
    assert markdown_counts(ANSWER_1 + "\n" + ANSWER_2) == (HEADERS, LISTS, BOLD)
    assert markdown_counts("```\n# inside\n```\n# outside") == (1, 0, 0)
    assert markdown_counts("plain text") == (0, 0, 0)


def test_counts_from_conv_metadata_and_from_the_conversations_agree():
    conversation_a = [
        {"role": "user", "content": USER},
        {"role": "assistant", "content": ANSWER_1, "num_tokens": 40},  # unknown keys are tolerated
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": ANSWER_2},
    ]
    conversation_b = [{"role": "user", "content": USER}, {"role": "assistant", "content": "Short."}]
    length_a = len(ANSWER_1) + len(ANSWER_2)
    counted = {"model_a": "x", "model_b": "y", "winner": "tie"}
    from_conversations = {**counted, "conversation_a": conversation_a, "conversation_b": conversation_b}
    from_metadata = {
        **counted,
        "conv_metadata": {
            **_metadata([length_a, 0, 0, 0], [6, 0, 0, 0]),
            "header_count_a": {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 1},
            "list_count_a": {"ordered": 2, "unordered": 3},
            "bold_count_a": {"**": 3, "__": 1},
        },
        "conversation_a": [{"role": "assistant", "content": "ignored: conv_metadata comes first"}],
    }
    rows = Battles.from_records([from_conversations, from_metadata], style=True).style
    assert rows is not None and rows.dtype == np.int32
    assert dict(zip(COLUMNS, rows[0].tolist(), strict=True)) == {
        "length_a": length_a, "headers_a": HEADERS, "lists_a": LISTS, "bold_a": BOLD,
        "length_b": 6, "headers_b": 0, "lists_b": 0, "bold_b": 0,
    }  # fmt: skip
    assert rows[1].tolist() == rows[0].tolist()
    # A count may be a plain number too.
    plain = {**counted, "conv_metadata": {**from_metadata["conv_metadata"], "bold_count_a": 4}}
    assert Battles.from_records([plain], style=True).style.tolist() == [rows[0].tolist()]  # type: ignore[union-attr]


def test_style_is_read_only_when_asked():
    records = [{**r, "conversation_a": "not a list"} for r in FIXED[:50]]
    assert Battles.from_records(records).style is None  # the default path does not look at them
    with pytest.raises(InvalidInput, match="read without their style"):
        fit_style_ratings(Battles.from_records(FIXED[:50]))


GOOD = FIXED[:3]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"conv_metadata": None}, "record 1: conversation_a is missing, and so is conv_metadata"),
        ({"conv_metadata": None, "conversation_a": []}, "record 1: conversation_b is missing"),
        ({"conv_metadata": [1, 2]}, "record 1: conv_metadata is a list, not a record"),
        ({"conv_metadata": {"turns": 1}}, "record 1: conv_metadata.sum_assistant_a_tokens is missing"),
        ({"sum_assistant_a_tokens": "12"}, "record 1: conv_metadata.sum_assistant_a_tokens is a str, not a count"),
        ({"sum_assistant_b_tokens": -3}, "record 1: conv_metadata.sum_assistant_b_tokens is -3, not a count"),
        ({"sum_assistant_b_tokens": 2.5}, "record 1: conv_metadata.sum_assistant_b_tokens is 2.5, not a count"),
        ({"bold_count_a": True}, "record 1: conv_metadata.bold_count_a is a bool, not a count"),
        ({"header_count_b": {"h1": "2"}}, "record 1: conv_metadata.header_count_b.h1 is '2', not a count"),
        ({"list_count_a": {f"k{i}": 1 for i in range(65)}}, "record 1: conv_metadata.list_count_a has 65 keys"),
        ({"sum_assistant_a_tokens": 2_000_000_000}, "sum_assistant_a_tokens is 2,000,000,000, over 1,000,000,000"),
        ({"header_count_a": None}, "record 1: conv_metadata.header_count_a is missing"),
    ],
)  # fmt: skip
def test_bad_style_is_refused_with_the_record_the_field_and_the_fix(change, expected):
    records = [dict(r) for r in GOOD]
    if "conv_metadata" in change or "conversation_a" in change:
        records[1].update(change)
    else:
        records[1]["conv_metadata"] = {**records[1]["conv_metadata"], **change}
    with pytest.raises(BattlesInvalid) as caught:
        Battles.from_records(records, style=True)
    message = caught.value.message
    assert expected in message
    assert "Fix: " in message and "conv_metadata" in caught.value.fix


@pytest.mark.parametrize(
    ("conversation", "expected"),
    [
        ("hello", "record 1: conversation_b is a str, not a list of turns"),
        (["hello"], "record 1: conversation_b turn 0 is a str, not a record"),
        ([{"content": "hi"}], "record 1: conversation_b turn 0: role is missing"),
        ([{"role": 1, "content": "hi"}], "record 1: conversation_b turn 0: role is a int, not a string"),
        (
            [{"role": "user", "content": "q"}, {"role": "assistant"}],
            "conversation_b turn 1: content is missing",
        ),
        ([{"role": "assistant", "content": ["image", "text"]}], "turn 0: content is a list, not a string"),
        ([{"role": "user", "content": "q"}] * 10_001, "record 1: conversation_b has 10,001 turns"),
    ],
)
def test_bad_conversations_are_refused_with_the_record_the_turn_and_the_fix(conversation, expected):
    answer = [{"role": "user", "content": 5}, {"role": "assistant", "content": "fine"}]  # user turns not read
    records = [
        {**{k: r[k] for k in ("model_a", "model_b", "winner")}, "conversation_a": answer} for r in GOOD
    ]
    for r in records:
        r["conversation_b"] = answer
    records[1]["conversation_b"] = conversation
    with pytest.raises(BattlesInvalid, match="Fix: ") as caught:
        Battles.from_records(records, style=True)
    assert expected in caught.value.message


def _write(folder: Path, suffix: str, records: list[dict]) -> Path:
    path = folder / f"battles{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".csv":  # nested fields as JSON text in their cells
        flat = [
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()} for r in records
        ]
        keys = sorted({k for r in flat for k in r})
        pcsv.write_csv(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in flat]), path)
    else:  # nested columns: conv_metadata a struct, the conversations lists of structs
        keys = sorted({k for r in records for k in r})
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records]), path)
    return path


MIXED = [
    *FIXED[:4],
    {  # no conv_metadata: counted from the conversations
        "model_a": "alpha",
        "model_b": "beta",
        "winner": "model_b",
        "conversation_a": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ANSWER_1}],
        "conversation_b": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ANSWER_2}],
    },
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_every_format_reads_the_same_style(tmp_path, suffix):
    expected = Battles.from_records(MIXED, style=True).style
    assert expected is not None
    assert expected[4].tolist() == [len(ANSWER_1), 2, 2, 2, len(ANSWER_2), 1, 3, 2]
    battles = read_battles(_write(tmp_path, suffix, MIXED), style=True)
    assert battles.style is not None and battles.style.tolist() == expected.tolist()
    assert read_battles(_write(tmp_path, suffix, MIXED)).style is None


def test_a_parquet_conv_metadata_column_reads_as_its_records_do(tmp_path):
    """A struct column of valid counts is summed as columns; anything else is read row by row and refused
    with its row."""
    records = [{k: r[k] for k in ("model_a", "model_b", "winner", "conv_metadata")} for r in FIXED[:200]]
    expected = Battles.from_records(records, style=True).style
    assert expected is not None
    path = tmp_path / "battles.parquet"
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=64)  # several chunks
    assert read_battles(path, style=True).style.tolist() == expected.tolist()  # type: ignore[union-attr]
    partial = [dict(r) for r in records]  # a key some records lack: null in the others, an absent key
    partial[5] = {
        **partial[5],
        "conv_metadata": {**partial[5]["conv_metadata"], "bold_count_b": {"**": 1, "***": 2}},
    }
    pq.write_table(pa.Table.from_pylist(partial), path)
    assert read_battles(path, style=True).style[5, 7] == 3  # type: ignore[index]
    for change, expected_message in (
        ({"sum_assistant_b_tokens": -1}, "row 7: conv_metadata.sum_assistant_b_tokens is -1, not a count"),
        ({"list_count_a": None}, "row 7: conv_metadata.list_count_a is missing"),
    ):
        bad = [dict(r) for r in records]
        bad[7] = {**bad[7], "conv_metadata": {**bad[7]["conv_metadata"], **change}}
        pq.write_table(pa.Table.from_pylist(bad), path)
        with pytest.raises(BattlesInvalid, match="Fix: ") as caught:
            read_battles(path, style=True)
        assert expected_message in caught.value.message


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (".jsonl", "line 2: conversation_a is missing, and so is conv_metadata"),
        (".csv", "row 1 (counted from 0, after the header): conversation_a is missing"),
        (".parquet", "row 1: conversation_a is missing, and so is conv_metadata"),
    ],
)
def test_files_name_the_record_without_style(tmp_path, suffix, expected):
    records = [dict(r) for r in FIXED[:3]]
    del records[1]["conv_metadata"]
    with pytest.raises(BattlesInvalid, match="Fix: ") as caught:
        read_battles(_write(tmp_path, suffix, records), style=True)
    assert expected in caught.value.message
    bare = [{k: r[k] for k in ("model_a", "model_b", "winner")} for r in records]
    with pytest.raises(BattlesInvalid, match="row 0: conversation_a is missing"):
        read_battles(_write(tmp_path, ".parquet", bare), style=True)


def test_a_csv_cell_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "battles.csv"
    path.write_text('model_a,model_b,winner,conv_metadata\na,b,tie,"{""sum"": 1"\n', encoding="utf-8")
    with pytest.raises(BattlesInvalid, match=r"row 0 .*: conv_metadata is not valid JSON"):
        read_battles(path, style=True)


def test_a_feature_no_battle_differs_in_has_no_coefficient():
    records = [
        {**r, "conv_metadata": {**r["conv_metadata"], "bold_count_a": 0, "bold_count_b": 0}} for r in FIXED
    ]
    fit = fit_style_ratings(Battles.from_records(records, style=True), bootstrap=10)
    assert fit.style is not None
    assert [c.coefficient is None for c in fit.style] == [False, False, False, True]
    assert fit.style[3].lower is None and fit.style[0].lower is not None
    assert any("no two battles differ in bold" in w for w in fit.warnings)


def test_an_anchor_pins_its_model_and_the_bootstrap_is_seeded_whatever_the_workers():
    battles = Battles.from_records(FIXED, style=True)
    free = fit_style_ratings(battles, bootstrap=16, seed=5, workers=1)
    pinned = fit_style_ratings(battles, bootstrap=16, seed=5, workers=1, anchor=("gamma", 1114.0))
    anchored = {m.model: m for m in pinned.models}
    assert (
        anchored["gamma"].rating == anchored["gamma"].rating_lower == anchored["gamma"].rating_upper == 1114.0
    )
    shift = 1114.0 - _by_model(free)["gamma"]
    for m in free.models:
        assert anchored[m.model].rating == pytest.approx(m.rating + shift, abs=1e-9)
    assert pinned.style == free.style  # the coefficients do not depend on the anchor

    def intervals(fit) -> list:
        return [(m.rating_lower, m.rating_upper) for m in fit.models] + list(fit.style)

    assert intervals(fit_style_ratings(battles, bootstrap=16, seed=5, workers=1)) == intervals(free)
    assert intervals(fit_style_ratings(battles, bootstrap=16, seed=6, workers=1)) != intervals(free)
    assert intervals(fit_style_ratings(battles, bootstrap=16, seed=5, workers=2)) == intervals(free)
    for m in free.models:
        assert m.rank == 1 + sum(o.rating_lower > m.rating_upper for o in free.models)  # type: ignore[operator]


def test_the_cli_rates_with_style_control(tmp_path):
    path = _write(tmp_path, ".jsonl", FIXED)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["arena", "ratings", str(path), "--style-control", "--json", "--bootstrap", "10"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [set(row) for row in rows] == [
        {"model", "rating", "rating_lower", "rating_upper", "rank", "battles"}
    ] * len(STRENGTHS)
    expected = fit_style_ratings(read_battles(path, style=True), bootstrap=10)
    assert [row["rating"] for row in rows] == pytest.approx([m.rating for m in expected.models], abs=1e-9)
    assert expected.style is not None
    note = [line for line in result.stderr.splitlines() if line.startswith("note: style coefficients")]
    assert len(note) == 1 and all(f"{c.feature} {c.coefficient:+.3f}" in note[0] for c in expected.style)

    plain = runner.invoke(cli, ["arena", "ratings", str(path), "--json", "--bootstrap", "0"])
    assert plain.exit_code == 0 and "style" not in plain.stderr
    assert json.loads(plain.stdout) != json.loads(
        runner.invoke(
            cli, ["arena", "ratings", str(path), "--json", "--bootstrap", "0", "--style-control"]
        ).stdout
    )

    table = runner.invoke(cli, ["arena", "ratings", str(path), "--style-control", "--bootstrap", "10"])
    assert table.exit_code == 0, table.output
    assert "Style coefficients" in table.stdout and f"{expected.style[0].coefficient:+.3f}" in table.stdout

    bare = _write(tmp_path, ".json", [{k: r[k] for k in ("model_a", "model_b", "winner")} for r in FIXED[:5]])
    refused = runner.invoke(cli, ["arena", "ratings", str(bare), "--style-control"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.startswith("error [battles_invalid]: ")
    assert "record 0: conversation_a is missing, and so is conv_metadata" in refused.stderr
