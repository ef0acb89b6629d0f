"""The arena's fit against choix (a maintained Bradley-Terry library) on a fixed battle table: the same
maximum-likelihood ratings. choix rates a list of (winner, loser) comparisons; a tie is half a win for each
side, so each decisive battle is given twice and each tie once in each direction."""

from __future__ import annotations

import math

import choix
import numpy as np
import pytest

from backend.arena.battles import A_WINS, B_WINS, TIE, Battles
from backend.arena.ratings import fit_ratings


def table(seed: int, models: int, battles: int) -> Battles:
    rng = np.random.default_rng(seed)
    strength = rng.normal(scale=0.8, size=models)
    a = rng.integers(models, size=battles)
    b = (a + 1 + rng.integers(models - 1, size=battles)) % models
    p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    u = rng.random(battles)
    outcome = np.where(u < 0.15, TIE, np.where(u < 0.15 + 0.85 * p, A_WINS, B_WINS)).astype(np.int8)
    names = tuple(f"model-{i:02d}" for i in range(models))
    return Battles(names, a.astype(np.int32), b.astype(np.int32), outcome)


def choix_ratings(battles: Battles, anchor: tuple[str, float] | None = None) -> dict[str, float]:
    comparisons: list[tuple[int, int]] = []
    columns = (battles.model_a.tolist(), battles.model_b.tolist(), battles.outcome.tolist())
    for i, j, outcome in zip(*columns, strict=True):
        if outcome == A_WINS:
            comparisons += [(i, j), (i, j)]
        elif outcome == B_WINS:
            comparisons += [(j, i), (j, i)]
        else:
            comparisons += [(i, j), (j, i)]
    params = choix.ilsr_pairwise(len(battles.models), comparisons, alpha=0.0, tol=1e-12)
    ratings = 1000 + 400 * (params - params.mean()) / math.log(10)
    if anchor is not None:
        ratings += anchor[1] - ratings[battles.models.index(anchor[0])]
    return dict(zip(battles.models, ratings.tolist(), strict=True))


@pytest.mark.parametrize(("seed", "models", "battles"), [(0, 12, 3000), (1, 30, 8000)])
def test_the_fit_is_choix_maximum_likelihood(seed: int, models: int, battles: int) -> None:
    fixed = table(seed, models, battles)
    ours = {m.model: m.rating for m in fit_ratings(fixed, bootstrap=0).models}
    theirs = choix_ratings(fixed)
    assert max(abs(ours[name] - theirs[name]) for name in fixed.models) < 1e-6


def test_an_anchor_shifts_both_alike() -> None:
    fixed = table(2, 10, 2000)
    anchor = ("model-03", 1114.0)
    ours = {m.model: m.rating for m in fit_ratings(fixed, bootstrap=0, anchor=anchor).models}
    theirs = choix_ratings(fixed, anchor)
    assert ours["model-03"] == pytest.approx(1114.0, abs=1e-9)
    assert max(abs(ours[name] - theirs[name]) for name in fixed.models) < 1e-6
