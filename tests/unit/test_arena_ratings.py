"""The arena's Bradley-Terry ratings against a maximum-likelihood fit written independently here (scikit-learn's
unpenalised logistic regression on FastChat's +-ln10 features), on battles drawn from known strengths, and
the parts of the result a reader relies on: ties, components, the anchor, the seeded bootstrap, ranks."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from backend.arena.battles import Battles
from backend.arena.ratings import fit_ratings
from backend.errors import InvalidInput

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")


def _table(strengths: dict[str, float], n: int, seed: int, tie_share: float = 0.2) -> list[dict[str, str]]:
    """Battles of random pairs; a wins with P = 1 / (1 + 10^(r_b - r_a)) (strengths in log10 units)."""
    rng = random.Random(seed)
    names = sorted(strengths)
    records = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        if rng.random() < tie_share:
            winner = rng.choice(("tie", "tie (bothbad)"))
        else:
            p = 1 / (1 + 10 ** (strengths[b] - strengths[a]))
            winner = "model_a" if rng.random() < p else "model_b"
        records.append({"model_a": a, "model_b": b, "winner": winner})
    return records


FIXED = _table({"alpha": 0.0, "beta": 0.3, "gamma": -0.2, "delta": 0.55, "eps": 0.1}, 600, seed=7)


def _independent_fit(records: list[dict[str, str]]) -> dict[str, float]:
    """FastChat's construction: a row per battle and outcome, x = +ln10 for model_a and -ln10 for model_b,
    y = model_a won, weight 1 for a win and 1/2 for each side of a tie; no intercept, no penalty. One model's
    column is left out (its strength fixed at 0, so the problem has one solution), then the mean is centred."""
    names = sorted({r["model_a"] for r in records} | {r["model_b"] for r in records})
    column = {name: k for k, name in enumerate(names)}
    rows, labels, weights = [], [], []
    for r in records:
        x = np.zeros(len(names))
        x[column[r["model_a"]]] = math.log(10)
        x[column[r["model_b"]]] = -math.log(10)
        share_a = {"model_a": 1.0, "model_b": 0.0}.get(r["winner"], 0.5)
        for label, weight in ((1, share_a), (0, 1.0 - share_a)):
            if weight:
                rows.append(x)
                labels.append(label)
                weights.append(weight)
    model = LogisticRegression(
        C=np.inf, fit_intercept=False, solver="newton-cholesky", tol=1e-14, max_iter=500
    )
    model.fit(np.array(rows)[:, 1:], np.array(labels), sample_weight=np.array(weights))
    coef = np.concatenate([[0.0], model.coef_[0]])
    ratings = 1000 + 400 * (coef - coef.mean())
    return dict(zip(names, ratings.tolist(), strict=True))


def _by_model(fit) -> dict[str, float]:
    return {m.model: m.rating for m in fit.models}


def test_ratings_are_the_maximum_likelihood_fit_of_an_independent_logistic_regression():
    ours = _by_model(fit_ratings(Battles.from_records(FIXED), bootstrap=0))
    reference = _independent_fit(FIXED)
    assert ours.keys() == reference.keys()
    for name, rating in reference.items():
        assert ours[name] == pytest.approx(rating, abs=1e-6), name
    assert sum(ours.values()) / len(ours) == pytest.approx(1000, abs=1e-9)


def test_the_fixed_table_gives_these_ratings():
    """Pinned output: a change of method (another library, another solver) must show up here."""
    ours = _by_model(fit_ratings(Battles.from_records(FIXED), bootstrap=0))
    assert {name: round(rating, 6) for name, rating in ours.items()} == PINNED


#: The fit of FIXED (scikit-learn's fit above agrees to 1e-6). Closer together than the strengths drawn from
#: (1003, 1123, 923, 1223, 1043 mean-centred): a fifth of the battles are ties whatever the pair, and a tie
#: is half a win each.
PINNED = {
    "alpha": 953.242367,
    "beta": 1057.915436,
    "delta": 1122.118734,
    "eps": 971.241526,
    "gamma": 895.481936,
}


def test_the_order_of_battles_and_of_the_two_sides_does_not_matter():
    shuffled = list(FIXED)
    random.Random(1).shuffle(shuffled)
    swap = {"model_a": "model_b", "model_b": "model_a"}
    flipped = [
        {"model_a": r["model_b"], "model_b": r["model_a"], "winner": swap.get(r["winner"], r["winner"])}
        for r in shuffled
    ]
    base = _by_model(fit_ratings(Battles.from_records(FIXED), bootstrap=0))
    for other in (shuffled, flipped):
        again = _by_model(fit_ratings(Battles.from_records(other), bootstrap=0))
        assert again == pytest.approx(base, abs=1e-8)


def test_battles_from_known_strengths_are_recovered_within_the_intervals():
    truth = {f"m{k}": 0.2 * k for k in range(8)}  # 0 to 560 rating points apart
    # No ties: ties at a fixed rate, whatever the pair, are not Bradley-Terry's model and pull ratings together.
    battles = Battles.from_records(_table(truth, 20_000, seed=3, tie_share=0.0))
    fit = fit_ratings(battles, bootstrap=100, seed=0)
    mean = sum(truth.values()) / len(truth)
    outside = 0
    for m in fit.models:
        expected = 1000 + 400 * (truth[m.model] - mean)
        assert m.rating_lower is not None and m.rating_upper is not None
        half = (m.rating_upper - m.rating_lower) / 2
        assert 2 < half < 30, m  # intervals of a sensible width for 5,000 battles a model
        outside += not (m.rating_lower <= expected <= m.rating_upper)
        assert abs(m.rating - expected) < 2 * half, m
    assert outside <= 1  # 95% intervals: one of eight may miss
    assert [m.model for m in fit.models] == [f"m{k}" for k in reversed(range(8))]


def test_a_tie_is_half_a_win_and_tie_bothbad_is_a_tie():
    only_ties = [
        {"model_a": a, "model_b": b, "winner": "tie"}
        for a, b in (("x", "y"), ("y", "z"), ("z", "x"), ("x", "y"))
    ]
    for rating in _by_model(fit_ratings(Battles.from_records(only_ties), bootstrap=0)).values():
        assert rating == pytest.approx(1000, abs=1e-9)
    # One win each way and two ties weigh as two wins each way: the same fit.
    ties = [{"model_a": "x", "model_b": "y", "winner": "tie"}] * 2 + [
        {"model_a": "x", "model_b": "z", "winner": "model_a"},
        {"model_a": "z", "model_b": "y", "winner": "model_a"},
        {"model_a": "y", "model_b": "z", "winner": "model_a"},
        {"model_a": "z", "model_b": "x", "winner": "model_a"},
        {"model_a": "x", "model_b": "z", "winner": "model_a"},
    ]
    wins = [
        {"model_a": "x", "model_b": "y", "winner": "model_a"},
        {"model_a": "x", "model_b": "y", "winner": "model_b"},
        *ties[2:],
    ]
    assert _by_model(fit_ratings(Battles.from_records(ties), bootstrap=0)) == pytest.approx(
        _by_model(fit_ratings(Battles.from_records(wins), bootstrap=0)), abs=1e-8
    )
    bothbad = [{**r, "winner": "tie (bothbad)"} if r["winner"] == "tie" else r for r in FIXED]
    assert _by_model(fit_ratings(Battles.from_records(bothbad), bootstrap=0)) == pytest.approx(
        _by_model(
            fit_ratings(
                Battles.from_records(
                    [{**r, "winner": "tie"} if r["winner"].startswith("tie") else r for r in FIXED]
                ),
                bootstrap=0,
            )
        ),
        abs=1e-8,
    )


def test_a_battle_graph_that_is_not_connected_warns_and_names_its_groups():
    left = _table({"a1": 0.0, "a2": 0.3}, 200, seed=1)
    right = _table({"b1": 0.0, "b2": 0.1, "b3": -0.2}, 300, seed=2)
    fit = fit_ratings(Battles.from_records(left + right), bootstrap=20)
    assert sorted(fit.components) == [("a1", "a2"), ("b1", "b2", "b3")]
    (warning,) = fit.warnings
    assert "not connected" in warning
    assert "[b1, b2, b3]" in warning and "[a1, a2]" in warning
    # Each group is centred on its own: its ratings are the ones it has alone.
    alone = _by_model(fit_ratings(Battles.from_records(left), bootstrap=0))
    assert {k: v for k, v in _by_model(fit).items() if k in alone} == pytest.approx(alone, abs=1e-7)
    assert fit_ratings(Battles.from_records(left), bootstrap=0).warnings == ()


def test_a_model_that_never_lost_is_named_not_estimated():
    records = [
        *_table({"p": 0.0, "q": 0.2}, 100, seed=4),
        {"model_a": "champ", "model_b": "p", "winner": "model_a"},
        {"model_a": "q", "model_b": "champ", "winner": "model_b"},
    ]
    fit = fit_ratings(Battles.from_records(records), bootstrap=0)
    assert not fit.converged
    assert any("[champ] never lost" in w for w in fit.warnings)


def test_an_anchor_pins_its_model_and_shifts_the_others():
    battles = Battles.from_records(FIXED)
    free = fit_ratings(battles, bootstrap=30, seed=5)
    pinned = fit_ratings(battles, bootstrap=30, seed=5, anchor=("gamma", 1114.0))
    shift = 1114.0 - _by_model(free)["gamma"]
    anchored = {m.model: m for m in pinned.models}
    assert anchored["gamma"].rating == 1114.0
    assert anchored["gamma"].rating_lower == anchored["gamma"].rating_upper == 1114.0
    for m in free.models:
        assert anchored[m.model].rating == pytest.approx(m.rating + shift, abs=1e-9)
    with pytest.raises(InvalidInput, match="fought no battle"):
        fit_ratings(battles, bootstrap=0, anchor=("nobody", 1000.0))


def test_the_bootstrap_is_seeded_and_does_not_depend_on_the_workers():
    battles = Battles.from_records(FIXED)

    def intervals(**kwargs):
        return [(m.rating_lower, m.rating_upper) for m in fit_ratings(battles, bootstrap=16, **kwargs).models]

    first = intervals(seed=11, workers=1)
    assert intervals(seed=11, workers=1) == first
    assert intervals(seed=12, workers=1) != first
    assert intervals(seed=11, workers=2) == first  # two spawned processes, the same rounds


def test_rank_is_one_plus_the_models_whose_lower_bound_is_above_this_upper_bound():
    truth = {"top": 1.0, "mid1": 0.3, "mid2": 0.29, "low": -0.5}
    fit = fit_ratings(Battles.from_records(_table(truth, 4_000, seed=9)), bootstrap=50)
    ranks = {m.model: m.rank for m in fit.models}
    assert ranks == {"top": 1, "mid1": 2, "mid2": 2, "low": 4}
    for m in fit.models:
        assert m.rank == 1 + sum(o.rating_lower > m.rating_upper for o in fit.models)  # type: ignore[operator]
    # Without bootstrap, the rank is by rating alone.
    assert [m.rank for m in fit_ratings(Battles.from_records(FIXED), bootstrap=0).models] == [1, 2, 3, 4, 5]


def test_battles_per_model_are_counted():
    fit = fit_ratings(Battles.from_records(FIXED), bootstrap=0)
    counted = {name: sum(name in (r["model_a"], r["model_b"]) for r in FIXED) for name in _by_model(fit)}
    assert {m.model: m.battles for m in fit.models} == counted
    assert fit.battles == len(FIXED)
    assert set(fit.rows()[0]) == {"model", "rating", "rating_lower", "rating_upper", "rank", "battles"}
