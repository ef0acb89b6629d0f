"""The joint instruction-difficulty fit recovers known abilities and difficulties, agrees with an
independent fit written here, and its rank ranges follow its bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from backend.judged.difficulty import RIDGE, fit_joint


def _simulate(seed: int, abilities: list[float], n_items: int, missing: float = 0.0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1.0, n_items)
    prefs: dict[str, list[float | None]] = {}
    for m, a in enumerate(abilities):
        p = 1 / (1 + np.exp(-(a - difficulty)))
        wins = rng.random(n_items) < p
        row: list[float | None] = [2.0 if w else 1.0 for w in wins]
        for i in range(n_items):
            if rng.random() < missing:
                row[i] = None
        prefs[f"model-{m}"] = row
    return prefs, difficulty


def _independent(prefs: dict[str, list[float | None]], precision: float) -> np.ndarray:
    """The penalised likelihood at a given prior precision on the difficulties, minimised without the
    analytic gradient."""
    names = list(prefs)
    y = np.array([[np.nan if p is None else (0.5 if p == 0 else p - 1) for p in prefs[n]] for n in names])
    mask = ~np.isnan(y)
    n_m = len(names)
    penalty = np.concatenate([np.full(n_m, RIDGE), np.full(y.shape[1], precision)])

    def nll(x: np.ndarray) -> float:
        z = x[:n_m, None] - x[None, n_m:]
        p = np.clip(1 / (1 + np.exp(-z)), 1e-12, 1 - 1e-12)
        terms = np.where(mask, np.nan_to_num(y) * np.log(p) + (1 - np.nan_to_num(y)) * np.log(1 - p), 0.0)
        return float(-terms.sum() + 0.5 * np.sum(penalty * x**2))

    return minimize(nll, np.zeros(n_m + y.shape[1]), method="BFGS", options={"gtol": 1e-8}).x


def test_known_abilities_are_recovered_within_the_intervals() -> None:
    abilities = [-1.0, 0.0, 1.0, 2.0]
    prefs, difficulty = _simulate(1, abilities, 400)
    fit = fit_joint(prefs, rounds=30, seed=3)
    by = {e.model: e for e in fit.models}
    assert [e.model for e in fit.models] == ["model-3", "model-2", "model-1", "model-0"]
    fitted = np.array([by[f"model-{m}"].ability for m in range(4)])
    # Abilities relative to the mean difficulty: compare the differences, which are identified.
    assert np.allclose(fitted - fitted.mean(), np.array(abilities) - np.mean(abilities), atol=0.3)
    assert np.corrcoef(fit.difficulties, difficulty)[0, 1] > 0.6
    truth = {
        f"model-{m}": 100 * np.mean(1 / (1 + np.exp(-(a - difficulty)))) for m, a in enumerate(abilities)
    }
    for name, estimate in by.items():
        assert estimate.standard_error is not None and 0 < estimate.standard_error < 5
        assert abs(estimate.win_rate - truth[name]) < 3 * estimate.standard_error + 1.0
    # Far apart: every model has its own rank.
    assert [e.rank for e in fit.models] == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_it_agrees_with_an_independent_fit_and_handles_missing_verdicts_and_draws() -> None:
    prefs, _ = _simulate(2, [0.3, 0.5, -0.2], 30, missing=0.2)
    prefs["model-0"][0] = 1.5
    prefs["model-1"][1] = 0  # a draw, as alpaca-eval writes it
    fit = fit_joint(prefs, rounds=0)
    ours = np.array([next(e.ability for e in fit.models if e.model == n) for n in prefs])
    # At the prior the fit ended on, the independent minimiser finds the same abilities (up to the shift).
    d = np.array(fit.difficulties)
    variance = np.mean(d**2) or 1.0
    theirs = _independent(prefs, 1 / variance)
    theirs = theirs[:3] - theirs[3:].mean()
    assert np.allclose(ours, theirs, atol=0.05)
    assert all(e.standard_error is None for e in fit.models)
    assert {e.model: e.judged for e in fit.models} == {
        n: sum(p is not None for p in v) for n, v in prefs.items()
    }


def test_close_models_share_ranks() -> None:
    prefs, _ = _simulate(4, [0.0, 0.05, 3.0], 60)
    fit = fit_joint(prefs, rounds=40, seed=0)
    ranks = {e.model: e.rank for e in fit.models}
    assert ranks["model-2"] == (1, 1)
    assert ranks["model-0"] == ranks["model-1"] == (2, 3)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same instructions"):
        fit_joint({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="no verdict"):
        fit_joint({"a": [None, None]})
    with pytest.raises(ValueError, match="no model"):
        fit_joint({})


def test_the_bootstrap_is_seeded() -> None:
    prefs, _ = _simulate(5, [0.0, 1.0], 50)
    assert fit_joint(prefs, rounds=20, seed=7) == fit_joint(prefs, rounds=20, seed=7)
