"""Which two models battle next: never a model against itself, more often models with few battles and
models with close ratings, as the public arena samples.

A pair {i, j} is drawn with probability proportional to

    w(i, j) = ((1 + n_i) (1 + n_j)) ^ -few  *  exp(-close * |r_i - r_j| / 100)

where n is a model's rated battles and r its rating (a model with none has the mean rating, so it is close
to every model), ``few`` is LEADERBOARD_ARENA_FEW_BATTLES_WEIGHT and ``close`` LEADERBOARD_ARENA_CLOSE_RATING_WEIGHT
(both 0: uniform over pairs). Which model answers on the left is a fair coin, so neither side means anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from backend.errors import InvalidInput

#: Rating points over which the close-rating weight falls by a factor e (with weight 1).
RATING_SCALE = 100.0


@dataclass(frozen=True)
class PairingWeights:
    few_battles: float = 0.5
    close_rating: float = 1.0

    def __post_init__(self) -> None:
        if not (self.few_battles >= 0 and self.close_rating >= 0):
            raise InvalidInput("pairing weights must be 0 or more")


def pair_weights(
    models: Sequence[str],
    battles: Mapping[str, int],
    ratings: Mapping[str, float],
    weights: PairingWeights,
) -> np.ndarray:
    """The symmetric matrix of w(i, j) over ``models`` (zero on the diagonal), not normalised."""
    n = np.array([battles.get(m, 0) for m in models], dtype=float)
    rated = [ratings[m] for m in models if m in ratings]
    mean = float(np.mean(rated)) if rated else 0.0
    r = np.array([ratings.get(m, mean) for m in models], dtype=float)
    few = (1.0 + n) ** -weights.few_battles
    w = np.outer(few, few) * np.exp(-weights.close_rating * np.abs(r[:, None] - r[None, :]) / RATING_SCALE)
    np.fill_diagonal(w, 0.0)
    return w


def choose_pair(
    rng: np.random.Generator,
    models: Sequence[str],
    battles: Mapping[str, int],
    ratings: Mapping[str, float],
    weights: PairingWeights,
) -> tuple[str, str]:
    """(model_a, model_b): two different models drawn by ``pair_weights``, in a random order."""
    if len(set(models)) != len(models):
        raise InvalidInput("a model is named twice among those to pair")
    if len(models) < 2:
        raise InvalidInput("pairing needs two models or more")
    w = np.triu(pair_weights(models, battles, ratings, weights), k=1)
    flat = w.ravel()
    total = flat.sum()
    if not total > 0 or not np.isfinite(total):  # every weight underflowed: fall back to uniform pairs
        flat = np.triu(np.ones_like(w), k=1).ravel()
        total = flat.sum()
    index = int(rng.choice(flat.size, p=flat / total))
    i, j = divmod(index, len(models))
    return (models[i], models[j]) if rng.random() < 0.5 else (models[j], models[i])
