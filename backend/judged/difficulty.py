"""Instruction difficulty estimated jointly over a leaderboard's models, for instruction sets of one's own.

AlpacaEval 2's length-controlled GLM takes each instruction's difficulty from a table fitted once on its 805
instructions (df_gamed.csv); a leaderboard with its own instructions has no such table. This module fits
one from the leaderboard's own annotations: every model m's preference on instruction i (in [0, 1]: the
AlpacaEval preference minus 1, a draw 0.5) is modelled as

    P(model m's answer beats the reference's on instruction i) = sigmoid(ability_m - difficulty_i)

with the preference as a soft label (the log loss alpaca-eval's GLM uses). The difficulties are random
effects, difficulty_i ~ N(0, sigma^2), with sigma^2 estimated from the data (empirical Bayes: alternate the
penalised fit with sigma^2 = mean(difficulty^2 + its posterior variance), a Laplace approximation): with a
few models per instruction, maximum likelihood alone overstates every difficulty and, through them, how far
apart the models are. The abilities carry a small ridge penalty (finite for a model that wins everywhere). A
model's
difficulty-adjusted win rate is 100 x the mean of its predicted probabilities over every instruction of the
set, so a model judged on a harder share of the instructions (or missing some verdicts) is not penalised
for it. Standard errors come from a seeded bootstrap over instructions (the instructions are the sample),
and the rank range of each model from those intervals, as the tables' rank ranges are formed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

#: Ridge penalty on the abilities (per parameter, in log-odds squared).
RIDGE = 1e-3
#: Rounds of the empirical-Bayes estimate of the difficulties' variance.
EB_ROUNDS = 8
DEFAULT_ROUNDS = 100


@dataclass(frozen=True)
class ModelEstimate:
    model: str
    ability: float  # log-odds against the reference on an instruction of average difficulty
    win_rate: float  # difficulty-adjusted, in %
    standard_error: float | None  # of win_rate, in % (None without bootstrap rounds)
    judged: int  # instructions with a verdict
    rank: tuple[int, int]  # best and worst rank within the standard errors


@dataclass(frozen=True)
class JointFit:
    models: tuple[ModelEstimate, ...]  # best first
    difficulties: tuple[float, ...]  # per instruction, mean 0 (higher: harder)
    rounds: int
    seed: int


def _penalised_fit(
    labels: np.ndarray, mask: np.ndarray, precision: float, start: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Abilities then difficulties maximising the soft-label log likelihood with a N(0, 1/precision) prior
    on the difficulties; and each difficulty's posterior variance (the inverse curvature)."""
    n_models, n_items = labels.shape
    y = np.where(mask, labels, 0.0)
    w = mask.astype(float)
    penalty = np.concatenate([np.full(n_models, RIDGE), np.full(n_items, precision)])

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, d = params[:n_models], params[n_models:]
        z = a[:, None] - d[None, :]
        log_p = -np.logaddexp(0.0, -z)
        log_q = -np.logaddexp(0.0, z)
        value = -np.sum(w * (y * log_p + (1 - y) * log_q)) + 0.5 * np.sum(penalty * params**2)
        residual = w * (1.0 / (1.0 + np.exp(-z)) - y)
        grad = np.concatenate([residual.sum(axis=1), -residual.sum(axis=0)]) + penalty * params
        return float(value), grad

    x0 = np.zeros(n_models + n_items) if start is None else start
    result = minimize(loss, x0, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-9})
    params = np.asarray(result.x)
    z = params[:n_models, None] - params[None, n_models:]
    p = 1.0 / (1.0 + np.exp(-z))
    curvature = (w * p * (1 - p)).sum(axis=0) + precision
    return params, 1.0 / curvature


def _fit(labels: np.ndarray, mask: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Abilities then difficulties (centred on 0), the difficulties' variance estimated alongside."""
    n_models = labels.shape[0]
    precision, params = 1.0, start
    for _ in range(EB_ROUNDS):
        params, variance = _penalised_fit(labels, mask, precision, params)
        difficulties = params[n_models:]
        sigma2 = float(np.mean(difficulties**2 + variance))
        precision = 1.0 / max(sigma2, 1e-4)
    assert params is not None
    shift = params[n_models:].mean()  # only differences are identified: difficulties centred on 0
    params = params.copy()
    params[:n_models] -= shift
    params[n_models:] -= shift
    return params


def _win_rates(params: np.ndarray, n_models: int) -> np.ndarray:
    a, d = params[:n_models], params[n_models:]
    return 100.0 * (1.0 / (1.0 + np.exp(-(a[:, None] - d[None, :])))).mean(axis=1)


def fit_joint(
    preferences: Mapping[str, Sequence[float | None]], rounds: int = DEFAULT_ROUNDS, seed: int = 0
) -> JointFit:
    """The joint fit over ``preferences``: per model, its AlpacaEval preferences (1..2, 0 or 1.5 a draw,
    None no verdict) on the same instructions in the same order."""
    names = list(preferences)
    if not names:
        raise ValueError("no model to fit")
    lengths = {len(v) for v in preferences.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError("every model needs preferences on the same instructions, in the same order")
    raw = np.array(
        [
            [np.nan if p is None else (0.5 if p == 0 else float(p) - 1.0) for p in preferences[n]]
            for n in names
        ]
    )
    mask = ~np.isnan(raw)
    if not mask.any():
        raise ValueError("no verdict at all: nothing to fit")
    labels = np.clip(np.nan_to_num(raw), 0.0, 1.0)
    params = _fit(labels, mask)
    n_models, n_items = raw.shape
    rates = _win_rates(params, n_models)
    errors: np.ndarray | None = None
    if rounds > 0:
        rng = np.random.default_rng(seed)
        draws = np.empty((rounds, n_models))
        for r in range(rounds):
            items = rng.integers(0, n_items, n_items)
            sample = _fit(
                labels[:, items],
                mask[:, items],
                np.concatenate([params[:n_models], params[n_models:][items]]),
            )
            draws[r] = _win_rates(sample, n_models)
        errors = draws.std(axis=0, ddof=1)
    low = rates - (errors if errors is not None else 0.0)
    high = rates + (errors if errors is not None else 0.0)
    estimates = []
    for m, name in enumerate(names):
        better = int(np.sum(low > high[m]))
        not_worse = int(np.sum(high >= low[m]))
        estimates.append(
            ModelEstimate(
                model=name,
                ability=float(params[m]),
                win_rate=float(rates[m]),
                standard_error=float(errors[m]) if errors is not None else None,
                judged=int(mask[m].sum()),
                rank=(better + 1, not_worse),
            )
        )
    estimates.sort(key=lambda e: -e.win_rate)
    return JointFit(tuple(estimates), tuple(float(d) for d in params[n_models:]), rounds, seed)
