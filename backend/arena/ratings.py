"""Bradley-Terry ratings of arena battles on the Chatbot Arena's scale, as FastChat's ``compute_mle_elo``.

The battles are pooled into counts per pair of models and outcome; a tie (``tie (bothbad)`` too) is half a
win for each side. The fit maximises the likelihood of ``P(a beats b) = 1 / (1 + 10^(r_b - r_a))`` over
strengths ``r`` in log10 units, by Newton's method with the exact Hessian and a backtracking line search
(quadratic convergence: the maximum to ~1e-10, where a first-order method stops at its tolerance); a rating is
``1000 + 400 r`` with the mean 1000 over the rated models (over each group of models that met, when the battle
graph is not connected), or shifted so that an anchored model has the rating asked for.

Intervals: a seeded bootstrap. Resampling the battles with replacement is a multinomial draw over the pooled
count cells, so each round costs the number of cells, not of battles; round k draws from the k-th child of
``numpy.random.SeedSequence(seed)``, so the intervals depend on the seed only, never on the number of workers.
The 95% interval is the 2.5th and 97.5th percentile of the rounds; rank = 1 + the number of models whose lower
bound is above this model's upper bound (the public arena's rank).

Style control (the public arena's per-battle length and markdown covariates in the same regression) is
style.py's ``fit_style_ratings``: it fits individual battles, which do not pool, and returns the same Ratings
with their ``style`` coefficients; it shares this module's checks, bootstrap, summary and ranks.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

import numpy as np

from backend.arena.battles import A_WINS, B_WINS, TIE, Battles
from backend.errors import InvalidInput

log = logging.getLogger(__name__)
P = TypeVar("P")

LN10 = math.log(10)
SCALE = 400.0
BASE = 1000.0
#: Newton stops when no strength moves by more than this (log10 units; a rating moves 400 times as much).
STEP_TOLERANCE = 1e-11
MAX_ITERATIONS = 100
#: Fewer rounds than this per worker are not worth a process (spawning one costs about a second).
ROUNDS_PER_PROCESS = 8
#: Automatic workers: processes only above this many models. Measured on 2 cores: 100 models, 1,000,000
#: battles, 100 rounds take 0.95 s in this process and 2.4 s over 2 spawned processes (a round is ~1.5 ms;
#: spawning and importing numpy is ~1 s); a round grows as the models cubed (the Newton solve), so processes
#: pay from a few hundred models.
PROCESS_MODELS = 400
#: Names shown per group in a warning.
SHOWN_NAMES = 8


@dataclass(frozen=True)
class ModelRating:
    """One model's rating, its 95% bootstrap interval (None without bootstrap) and rank."""

    model: str
    rating: float
    rating_lower: float | None
    rating_upper: float | None
    rank: int
    battles: int


@dataclass(frozen=True)
class StyleCoefficient:
    """A style feature's coefficient under style control: the log-odds of winning per standard deviation of
    the feature (side a's normalised difference from side b), and its 95% bootstrap interval (None without
    bootstrap). All None when no battle's answers differ in the feature."""

    feature: str
    coefficient: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class Ratings:
    """The fit: ``models`` best first, and what a reader must know about it (``warnings``)."""

    models: tuple[ModelRating, ...]
    battles: int
    bootstrap: int
    seed: int
    anchor: tuple[str, float] | None
    #: Groups of models that met (directly or through others): one when the battle graph is connected.
    components: tuple[tuple[str, ...], ...]
    #: False when no finite maximum exists (a model or group that never lost, or never won): see warnings.
    converged: bool
    warnings: tuple[str, ...]
    #: The style coefficients of a style-controlled fit (style.py), in the order of its FEATURES; else None.
    style: tuple[StyleCoefficient, ...] | None = None

    def rows(self) -> list[dict[str, Any]]:
        """The ratings as records (model, rating, rating_lower, rating_upper, rank, battles), best first."""
        return [asdict(m) for m in self.models]


@dataclass(frozen=True)
class _Problem:
    """What one fit needs, small enough to send to a worker process: the pooled cells of the battles."""

    n: int
    pair_i: np.ndarray  # the pairs that met, i < j
    pair_j: np.ndarray
    cell_pair: np.ndarray  # each cell's pair
    cell_outcome: np.ndarray  # A_WINS: i won, B_WINS: j won, TIE
    cell_count: np.ndarray
    start: np.ndarray
    anchor: tuple[int, float] | None


def fit_ratings(
    battles: Battles,
    *,
    bootstrap: int = 100,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    workers: int | None = None,
) -> Ratings:
    """Bradley-Terry maximum-likelihood ratings of ``battles`` with ``bootstrap`` rounds of 95% intervals.

    ``anchor``: (model, rating) pins that model's rating (in every bootstrap round too), shifting the others.
    ``workers``: processes for the bootstrap (1: in this process; default: the machine's cores above
    PROCESS_MODELS models, else 1).
    """
    anchored = _checked(battles, bootstrap, workers, anchor)
    n = len(battles.models)
    problem = _pool(battles, anchored)
    labels = _components(n, problem.pair_i, problem.pair_j)
    with _one_blas_thread():
        strengths, converged = _newton(problem, problem.cell_count)
    ratings = _scale(strengths, anchored)
    problem = _Problem(**{**problem.__dict__, "start": strengths})

    lower = upper = None
    if bootstrap:
        if workers is None:
            workers = (os.cpu_count() or 1) if n > PROCESS_MODELS else 1
        lower, upper = _percentiles(_bootstrap(problem, bootstrap, seed, workers, _rounds))
    groups, notes, converged = _summary(battles, problem, labels, converged)
    return Ratings(
        models=_ranked(battles, ratings, lower, upper),
        battles=len(battles),
        bootstrap=bootstrap,
        seed=seed,
        anchor=anchor,
        components=groups,
        converged=converged,
        warnings=tuple(notes),
    )


def _checked(
    battles: Battles, bootstrap: int, workers: int | None, anchor: tuple[str, float] | None
) -> tuple[int, float] | None:
    """The arguments of a fit checked; the anchor as (model index, rating)."""
    if workers is not None and workers < 1:
        raise InvalidInput(f"workers must be 1 or more, not {workers}")
    if bootstrap < 0:
        raise InvalidInput(f"bootstrap must be 0 or more rounds, not {bootstrap}")
    if len(battles) == 0:
        raise InvalidInput("no battles to rate")
    if anchor is None:
        return None
    model, value = anchor
    if model not in battles.models:
        raise InvalidInput(f"the anchor {model!r} fought no battle: anchor one of the rated models")
    if not math.isfinite(value):
        raise InvalidInput(f"the anchor's rating must be a finite number, not {value}")
    return battles.models.index(model), float(value)


def _percentiles(rounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of each column of the rounds. A model that a round drew no battle of has no rating
    in it (NaN), as in FastChat's rounds; one absent from every round keeps NaN bounds (None when shown)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(rounds, 2.5, axis=0), np.nanpercentile(rounds, 97.5, axis=0)


def _summary(
    battles: Battles, problem: _Problem, labels: np.ndarray, converged: bool
) -> tuple[tuple[tuple[str, ...], ...], list[str], bool]:
    """The groups of models that met, the warnings a reader must see, and whether a finite maximum exists."""
    groups = tuple(
        tuple(battles.models[i] for i in np.flatnonzero(labels == label)) for label in np.unique(labels)
    )
    notes = []
    if len(groups) > 1:
        shown = "; ".join(_names(g) for g in sorted(groups, key=len, reverse=True))
        notes.append(
            f"the battle graph is not connected: {len(groups)} groups of models never met each other (not even "
            f"through other models), so ratings compare only within a group: {shown}"
        )
    if not converged or not _finite_maximum(problem, labels):
        converged = False
        notes.append(
            "no finite maximum-likelihood ratings: "
            + _unbounded(problem, battles.models)
            + "; those ratings are where the fit stopped, not estimates: rate them after more battles"
        )
    for warning in notes:
        log.info("arena ratings: %s", warning)  # the result carries it; callers show it (the CLI on stderr)
    return groups, notes, converged


def _pool(battles: Battles, anchor: tuple[int, float] | None) -> _Problem:
    """Count cells (pair i < j, outcome for i) of the battles."""
    n = len(battles.models)
    a, b = battles.model_a.astype(np.int64), battles.model_b.astype(np.int64)
    i, j = np.minimum(a, b), np.maximum(a, b)
    swapped = a > b
    outcome = battles.outcome.astype(np.int64)
    outcome = np.where(
        swapped & (outcome == A_WINS), B_WINS, np.where(swapped & (outcome == B_WINS), A_WINS, outcome)
    )
    keys, counts = np.unique((i * n + j) * 3 + outcome, return_counts=True)
    pair_keys, cell_pair = np.unique(keys // 3, return_inverse=True)
    return _Problem(
        n=n,
        pair_i=pair_keys // n,
        pair_j=pair_keys % n,
        cell_pair=cell_pair,
        cell_outcome=keys % 3,
        cell_count=counts.astype(np.float64),
        start=np.zeros(n),
        anchor=anchor,
    )


def _wins(problem: _Problem, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: i's wins over j and j's over i, a tie half a win each."""
    pairs = len(problem.pair_i)
    share_i = np.where(problem.cell_outcome == A_WINS, 1.0, np.where(problem.cell_outcome == TIE, 0.5, 0.0))
    wins_i = np.bincount(problem.cell_pair, counts * share_i, pairs)
    wins_j = np.bincount(problem.cell_pair, counts * (1.0 - share_i), pairs)
    return wins_i, wins_j


def _loss(r: np.ndarray, i: np.ndarray, j: np.ndarray, wins_i: np.ndarray, wins_j: np.ndarray) -> float:
    d = LN10 * (r[i] - r[j])
    return float(np.dot(wins_i, np.logaddexp(0.0, -d)) + np.dot(wins_j, np.logaddexp(0.0, d)))


def _newton(problem: _Problem, counts: np.ndarray) -> tuple[np.ndarray, bool]:
    """The maximum-likelihood strengths (log10 units, each component's mean kept); whether it converged."""
    n, i, j = problem.n, problem.pair_i, problem.pair_j
    wins_i, wins_j = _wins(problem, counts)
    total = wins_i + wins_j
    # The likelihood does not move when a component's strengths move together: the gauge (the sum over
    # the components that met in these counts of 1_c 1_c^T / |c|) pins each component's mean, so that the
    # system is regular and the steps keep the means of the start. A model without battles here is NaN.
    met = total > 0
    labels = _components(n, i[met], j[met])
    fought = np.bincount(i[met], minlength=n) + np.bincount(j[met], minlength=n) > 0
    gauge = _gauge(labels)
    r = problem.start - gauge @ problem.start
    loss = _loss(r, i, j, wins_i, wins_j)
    for _ in range(MAX_ITERATIONS):
        d = LN10 * (r[i] - r[j])
        p = 0.5 * (1.0 + np.tanh(0.5 * d))  # P(i beats j), without overflow
        pair_gradient = LN10 * (total * p - wins_i)
        gradient = np.bincount(i, pair_gradient, n) - np.bincount(j, pair_gradient, n)
        h = LN10 * LN10 * total * p * (1.0 - p)
        off = np.bincount(i * n + j, h, n * n).reshape(n, n)
        hessian = np.diag(np.bincount(i, h, n) + np.bincount(j, h, n)) - off - off.T + gauge
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:  # numerically singular: a pair whose P(win) rounds to 0 or 1
            step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        t = 1.0
        while True:
            candidate = r - t * step
            new = _loss(candidate, i, j, wins_i, wins_j)
            if new <= loss + 1e-12 * abs(loss) or t < 1e-6:
                break
            t *= 0.5
        r, loss = candidate, new
        if float(np.max(np.abs(t * step))) < STEP_TOLERANCE:
            return np.where(fought, r, np.nan), True
    return np.where(fought, r, np.nan), False


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """The fit solves many small systems: OpenBLAS's threads cost 100 times the solve itself on a busy
    machine (27 ms against 0.1 ms for 100 models), and the bootstrap parallelises over processes instead.
    threadpoolctl comes with scikit-learn; without it, BLAS keeps its default."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _scale(strengths: np.ndarray, anchor: tuple[int, float] | None) -> np.ndarray:
    ratings = BASE + SCALE * strengths
    if anchor is not None:
        ratings = ratings + (anchor[1] - ratings[anchor[0]])
    return ratings


def _rounds(problem: _Problem, seeds: list[np.random.SeedSequence]) -> np.ndarray:
    """Bootstrap ratings, one row a round: the cell counts drawn again, the fit redone (from the point fit)."""
    total = int(problem.cell_count.sum())
    shares = problem.cell_count / problem.cell_count.sum()
    out = np.empty((len(seeds), problem.n))
    with _one_blas_thread():
        for k, seed in enumerate(seeds):
            counts = np.random.default_rng(seed).multinomial(total, shares).astype(np.float64)
            strengths, _ = _newton(problem, counts)
            out[k] = _scale(strengths, problem.anchor)
    return out


def _bootstrap(
    problem: P,
    rounds: int,
    seed: int,
    workers: int,
    work: Callable[[P, list[np.random.SeedSequence]], np.ndarray],
) -> np.ndarray:
    """``work(problem, seeds)``'s rows for rounds 0..rounds-1, in order, over up to ``workers`` processes."""
    seeds = np.random.SeedSequence(seed).spawn(rounds)
    workers = min(workers, max(1, rounds // ROUNDS_PER_PROCESS))
    if workers <= 1:
        return work(problem, seeds)
    chunks = [seeds[k::workers] for k in range(workers)]
    # 'spawn': a forked child of a process with threads (BLAS, the web server) can hang.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(work, [problem] * workers, chunks))
    out = np.empty((rounds, parts[0].shape[1]))
    for k, part in enumerate(parts):
        out[k::workers] = part
    return out


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Each model's component label (the smallest index in it), by propagating minimum labels."""
    labels = np.arange(n)
    while True:
        before = labels.copy()
        np.minimum.at(labels, i, labels[j])
        np.minimum.at(labels, j, labels[i])
        labels = labels[labels]
        if np.array_equal(labels, before):
            return labels


def _gauge(labels: np.ndarray) -> np.ndarray:
    same = labels[:, None] == labels[None, :]
    sizes = np.bincount(labels)[labels]
    return same / sizes[:, None]


def _reach(n: int, start: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    reached = np.zeros(n, dtype=bool)
    reached[start] = True
    while True:
        grown = reached.copy()
        grown[dst[reached[src]]] = True
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def _finite_maximum(problem: _Problem, labels: np.ndarray) -> bool:
    """A finite maximum exists when, within each component, every model can be reached from every other
    by "won (or tied) against" edges (Zermelo's condition: no group that never lost to the rest)."""
    wins_i, wins_j = _wins(problem, problem.cell_count)
    src = np.concatenate([problem.pair_i[wins_i > 0], problem.pair_j[wins_j > 0]])
    dst = np.concatenate([problem.pair_j[wins_i > 0], problem.pair_i[wins_j > 0]])
    for label in np.unique(labels):
        members = labels == label
        if not (
            np.all(_reach(problem.n, label, src, dst)[members])
            and np.all(_reach(problem.n, label, dst, src)[members])
        ):
            return False
    return True


def _unbounded(problem: _Problem, models: tuple[str, ...]) -> str:
    wins_i, wins_j = _wins(problem, problem.cell_count)
    n = problem.n
    won = np.bincount(problem.pair_i, wins_i, n) + np.bincount(problem.pair_j, wins_j, n)
    lost = np.bincount(problem.pair_i, wins_j, n) + np.bincount(problem.pair_j, wins_i, n)
    never_lost = [models[k] for k in np.flatnonzero(lost == 0)]
    never_won = [models[k] for k in np.flatnonzero(won == 0)]
    parts = []
    if never_lost:
        parts.append(f"{_names(never_lost)} never lost a battle")
    if never_won:
        parts.append(f"{_names(never_won)} never won one")
    return "; ".join(parts) or "a group of models never lost to the other models they met"


def _names(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return f"[{shown}{more}]"


def _ranked(
    battles: Battles, ratings: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None
) -> tuple[ModelRating, ...]:
    fought = battles.per_model()
    if lower is None or upper is None:
        ranks = 1 + (ratings[None, :] > ratings[:, None]).sum(axis=1)
    else:
        ranks = 1 + (lower[None, :] > upper[:, None]).sum(axis=1)
    order = sorted(range(len(ratings)), key=lambda k: (-ratings[k], battles.models[k]))
    return tuple(
        ModelRating(
            model=battles.models[k],
            rating=float(ratings[k]),
            rating_lower=None if lower is None or np.isnan(lower[k]) else float(lower[k]),
            rating_upper=None if upper is None or np.isnan(upper[k]) else float(upper[k]),
            rank=int(ranks[k]),
            battles=int(fought[k]),
        )
        for k in order
    )
