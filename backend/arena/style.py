"""Style control: the arena's Bradley-Terry ratings with per-battle style covariates, as the public Chatbot
Arena's "style control" (FastChat's ``construct_style_matrices`` and ``fit_mle_elo`` with style).

Each feature (length, headers, lists, bold: style_counts.py) of a battle is the normalised difference
(a - b) / (a + b + 1) of its two answers' counts, z-scored over the battles. Side a's score (1, 1/2 for a tie,
0) is regressed on ``ln10 (r_a - r_b) + x . beta`` by maximum likelihood over the individual battles (they do
not pool into counts per pair, each having its own features): Newton's method with the exact Hessian (the
models' block summed per pair with bincount, the features' block dense, 4 x 4, and their cross block), a
backtracking line search and the same gauge as ratings.py (each component's mean kept). The ratings are
``1000 + 400 r`` as without style (mean 1000, or anchored); ``beta`` is reported as the log-odds of winning per
standard deviation of each feature, so that a positive length coefficient means longer answers win more.

Differences from FastChat: its fit is penalised (scikit-learn's default L2, C = 1, over duplicated battles;
rating_systems.py's reg = 0.5), ours is the unpenalised maximum, as the plain ratings are; with many battles
the two agree closely. A feature in which no battle's answers differ (no bold anywhere) has no coefficient: it
is left out of the regression, with a warning.

Intervals: a seeded bootstrap resampling the battles (round k's draw from the k-th child of
``numpy.random.SeedSequence(seed)``, so the intervals depend on the seed only), the features kept as
z-scored over all battles (as FastChat does), each round refitted from the point fit. A round costs a few
Newton steps over every battle, so the rounds run in spawned processes from PROCESS_BATTLES battles.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from backend.arena.battles import A_WINS, B_WINS, Battles
from backend.arena.ratings import (
    LN10,
    MAX_ITERATIONS,
    STEP_TOLERANCE,
    Ratings,
    StyleCoefficient,
    _bootstrap,
    _checked,
    _components,
    _gauge,
    _one_blas_thread,
    _percentiles,
    _pool,
    _Problem,
    _ranked,
    _scale,
    _summary,
)
from backend.arena.style_counts import FEATURES
from backend.errors import InvalidInput

log = logging.getLogger(__name__)

#: Automatic workers: processes from this many battles. Measured on 2 shared cores, 1,000,000 battles of 100
#: models: a round is ~0.15 s (four Newton steps over every battle); 40 rounds took 6.0-6.2 s in 2 spawned
#: processes against 7.2-8.4 s in this one. The rounds are memory-bound: side by side on a busy machine each
#: was 2.4 times slower, and two processes won nothing. More cores should pay more; not measured here.
PROCESS_BATTLES = 200_000
#: A feature whose standard deviation over the battles is below this is constant: no coefficient.
CONSTANT = 1e-9


@dataclass(frozen=True)
class _StyleProblem:
    """One fit's data, small enough to send to a worker: each battle turned so that its first model has the
    lower index (its pair's i), its score and features turned with it."""

    n: int
    pair_i: np.ndarray  # the pairs that met, i < j
    pair_j: np.ndarray
    battle_pair: np.ndarray  # each battle's pair
    score: np.ndarray  # i's score: 1, 0.5 or 0
    features: np.ndarray  # (kept features, battles): z-scored, signed for i; a feature's row contiguous
    start: np.ndarray  # strengths then coefficients
    anchor: tuple[int, float] | None


def style_features(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The z-scored normalised differences (battles x FEATURES) of the counts (battles x 8, side a's four
    then side b's), and which features vary (the others are zero columns here, with no coefficient)."""
    k = len(FEATURES)
    a, b = counts[:, :k].astype(np.float64), counts[:, k:].astype(np.float64)
    ratio = (a - b) / (a + b + 1.0)
    mean, std = ratio.mean(axis=0), ratio.std(axis=0)
    varies = std > CONSTANT
    z = np.zeros_like(ratio)
    z[:, varies] = (ratio[:, varies] - mean[varies]) / std[varies]
    return z, varies


def fit_style_ratings(
    battles: Battles,
    *,
    bootstrap: int = 100,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    workers: int | None = None,
) -> Ratings:
    """Bradley-Terry ratings of ``battles`` controlled for style, with the style coefficients
    (``Ratings.style``, in the order of FEATURES) and ``bootstrap`` rounds of 95% intervals for both.

    ``battles`` must be read with their style (``read_battles(path, style=True)``). ``anchor`` and the
    bootstrap's rules are fit_ratings'; ``workers``: processes for the bootstrap (default: the machine's cores
    from PROCESS_BATTLES battles, else 1).
    """
    if battles.style is None:
        raise InvalidInput(
            "these battles were read without their style: read them with read_battles(path, style=True) "
            "or Battles.from_records(records, style=True)"
        )
    anchored = _checked(battles, bootstrap, workers, anchor)
    n = len(battles.models)
    pooled = _pool(battles, anchored)
    labels = _components(n, pooled.pair_i, pooled.pair_j)
    features, varies = style_features(battles.style)
    problem = _style_problem(battles, pooled, features[:, varies])
    with _one_blas_thread():
        point, converged = _newton(problem, np.ones(len(battles)))
    ratings = _scale(point[:n], anchored)
    problem = replace(problem, start=point, anchor=anchored)

    lower = upper = None
    kept = np.full((len(point) - n, 3), np.nan)  # each kept feature's coefficient, lower and upper bound
    kept[:, 0] = point[n:]
    if bootstrap:
        if workers is None:
            workers = (os.cpu_count() or 1) if len(battles) >= PROCESS_BATTLES else 1
        low, high = _percentiles(_bootstrap(problem, bootstrap, seed, workers, _rounds))
        lower, upper = low[:n], high[:n]
        kept[:, 1], kept[:, 2] = low[n:], high[n:]
    groups, notes, converged = _summary(battles, pooled, labels, converged)
    constant = [feature for feature, varied in zip(FEATURES, varies, strict=True) if not varied]
    if constant:
        notes.append(
            f"no two battles differ in {', '.join(constant)}: no style coefficient for "
            f"{'it' if len(constant) == 1 else 'them'} (left out of the regression)"
        )
        log.info("arena ratings: %s", notes[-1])
    values = iter(kept.tolist())
    coefficients = tuple(
        StyleCoefficient(feature, *(None if math.isnan(v) else v for v in next(values)))
        if varied
        else StyleCoefficient(feature, None, None, None)
        for feature, varied in zip(FEATURES, varies, strict=True)
    )
    return Ratings(
        models=_ranked(battles, ratings, lower, upper),
        battles=len(battles),
        bootstrap=bootstrap,
        seed=seed,
        anchor=anchor,
        components=groups,
        converged=converged,
        warnings=tuple(notes),
        style=coefficients,
    )


def _style_problem(battles: Battles, pooled: _Problem, features: np.ndarray) -> _StyleProblem:
    n = len(battles.models)
    a, b = battles.model_a.astype(np.int64), battles.model_b.astype(np.int64)
    swapped = a > b
    score = np.where(battles.outcome == A_WINS, 1.0, np.where(battles.outcome == B_WINS, 0.0, 0.5))
    score = np.where(swapped, 1.0 - score, score)
    pair_keys = pooled.pair_i * n + pooled.pair_j  # sorted: np.unique made them
    return _StyleProblem(
        n=n,
        pair_i=pooled.pair_i,
        pair_j=pooled.pair_j,
        battle_pair=np.searchsorted(pair_keys, np.minimum(a, b) * n + np.maximum(a, b)),
        score=score,
        features=np.ascontiguousarray(np.where(swapped[:, None], -features, features).T),
        start=np.zeros(n + features.shape[1]),
        anchor=None,
    )


def _loss(eta: np.ndarray, score: np.ndarray, weights: np.ndarray) -> float:
    """Minus the log-likelihood: softplus(eta) - score eta, a battle (softplus as exp and log1p: half the
    time of numpy's logaddexp)."""
    softplus = np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))
    return float(np.dot(weights, softplus - score * eta))


def _logits(theta: np.ndarray, problem: _StyleProblem) -> np.ndarray:
    """ln10 (r_i - r_j) + x . beta of each battle (NaN strengths, of models without battles, never read)."""
    n, i, j = problem.n, problem.pair_i, problem.pair_j
    pair = LN10 * (theta[:n][i] - theta[:n][j])
    return pair[problem.battle_pair] + theta[n:] @ problem.features


def _newton(problem: _StyleProblem, weights: np.ndarray) -> tuple[np.ndarray, bool]:
    """The maximum-likelihood strengths (log10 units, each component's mean kept) and coefficients, for the
    battles counted ``weights`` times; whether it converged. A model without battles here is NaN."""
    n, i, j, k = problem.n, problem.pair_i, problem.pair_j, len(problem.features)
    pairs, x, battle_pair, score = len(i), problem.features, problem.battle_pair, problem.score
    met = np.bincount(battle_pair, weights, pairs) > 0
    labels = _components(n, i[met], j[met])
    fought = np.bincount(i[met], minlength=n) + np.bincount(j[met], minlength=n) > 0
    # The likelihood does not move when a component's strengths move together: the gauge pins each
    # component's mean (see ratings._newton); the coefficients have no such freedom.
    gauge = _gauge(labels)
    theta = problem.start.copy()
    theta[:n] -= gauge @ theta[:n]
    eta = _logits(theta, problem)
    loss = _loss(eta, score, weights)
    for _ in range(MAX_ITERATIONS):
        p = 0.5 * (1.0 + np.tanh(0.5 * eta))  # P(i wins), without overflow
        residual = weights * (p - score)
        pair_residual = np.bincount(battle_pair, residual, pairs)
        gradient = np.concatenate(
            [LN10 * (np.bincount(i, pair_residual, n) - np.bincount(j, pair_residual, n)), x @ residual]
        )
        s = weights * p * (1.0 - p)
        pair_s = LN10 * LN10 * np.bincount(battle_pair, s, pairs)
        off = np.bincount(i * n + j, pair_s, n * n).reshape(n, n)
        hessian = np.empty((n + k, n + k))
        hessian[:n, :n] = np.diag(np.bincount(i, pair_s, n) + np.bincount(j, pair_s, n)) - off - off.T + gauge
        for c in range(k):
            sx = s * x[c]
            pair_sx = LN10 * np.bincount(battle_pair, sx, pairs)
            hessian[:n, n + c] = hessian[n + c, :n] = np.bincount(i, pair_sx, n) - np.bincount(j, pair_sx, n)
            for d in range(c, k):
                hessian[n + c, n + d] = hessian[n + d, n + c] = np.dot(sx, x[d])
        try:
            step = np.linalg.solve(hessian, gradient)
        except (
            np.linalg.LinAlgError
        ):  # numerically singular: collinear features, or P(win) rounding to 0 or 1
            step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        t = 1.0
        while True:
            candidate = theta - t * step
            candidate_eta = _logits(candidate, problem)
            new = _loss(candidate_eta, score, weights)
            if new <= loss + 1e-12 * abs(loss) or t < 1e-6:
                break
            t *= 0.5
        theta, eta, loss = candidate, candidate_eta, new
        if float(np.max(np.abs(t * step))) < STEP_TOLERANCE:
            return _unfought(theta, fought), True
    return _unfought(theta, fought), False


def _unfought(theta: np.ndarray, fought: np.ndarray) -> np.ndarray:
    out = theta.copy()
    out[: len(fought)][~fought] = np.nan
    return out


def _rounds(problem: _StyleProblem, seeds: list[np.random.SeedSequence]) -> np.ndarray:
    """Bootstrap rounds, one row a round: the ratings (scaled, anchored) then the coefficients."""
    battles = len(problem.score)
    out = np.empty((len(seeds), len(problem.start)))
    with _one_blas_thread():
        for k, seed in enumerate(seeds):
            drawn = np.bincount(np.random.default_rng(seed).integers(0, battles, battles), minlength=battles)
            kept = np.flatnonzero(drawn)  # about 1/e of the battles are not drawn: leave them out of the sums
            theta, _ = _newton(
                replace(
                    problem,
                    battle_pair=problem.battle_pair[kept],
                    score=problem.score[kept],
                    features=problem.features[:, kept],
                ),
                drawn[kept].astype(np.float64),
            )
            out[k, : problem.n] = _scale(theta[: problem.n], problem.anchor)
            out[k, problem.n :] = theta[problem.n :]
    return out
