"""Pairing: never a model against itself; pairs drawn in proportion to their weights (few battles, close
ratings); sides a fair coin."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from backend.arena.pairing import PairingWeights, choose_pair, pair_weights
from backend.errors import InvalidInput

MODELS = ["a", "b", "c", "d"]


def draw(
    weights: PairingWeights, battles: dict[str, int], ratings: dict[str, float], n: int = 20_000
) -> Counter:
    rng = np.random.default_rng(7)
    return Counter(choose_pair(rng, MODELS, battles, ratings, weights) for _ in range(n))


def test_uniform_without_weights_and_never_a_model_against_itself() -> None:
    drawn = draw(PairingWeights(0, 0), {"a": 500}, {"a": 1400, "b": 900})
    assert all(a != b for a, b in drawn)
    pairs = Counter(frozenset(p) for p in drawn.elements())
    assert len(pairs) == 6
    assert all(abs(count / 20_000 - 1 / 6) < 0.015 for count in pairs.values())
    left = sum(count for (a, _), count in drawn.items() if a == "a")
    assert abs(left / sum(c for p, c in drawn.items() if "a" in p) - 0.5) < 0.02


def test_frequencies_follow_the_weights_they_are_drawn_by() -> None:
    battles = {"a": 0, "b": 10, "c": 100, "d": 1000}
    ratings = {"a": 1000, "b": 1010, "c": 1200, "d": 1250}
    weights = PairingWeights(few_battles=0.5, close_rating=1.0)
    w = pair_weights(MODELS, battles, ratings, weights)
    assert np.allclose(w, w.T) and np.all(np.diag(w) == 0)
    assert w[0, 1] == pytest.approx((1 * 11) ** -0.5 * np.exp(-10 / 100))
    drawn = Counter(frozenset(p) for p in draw(weights, battles, ratings).elements())
    total = np.triu(w, 1).sum()
    for i, j in [(0, 1), (0, 2), (1, 3), (2, 3)]:
        share = drawn[frozenset((MODELS[i], MODELS[j]))] / 20_000
        assert share == pytest.approx(w[i, j] / total, abs=0.015)
    # Few battles and close ratings meet more: a-b (new, close) far more often than c-d's far weights allow.
    assert drawn[frozenset("ab")] > drawn[frozenset("ad")] > 0


def test_an_unrated_model_is_as_close_as_the_mean_rating() -> None:
    w = pair_weights(["new", "x", "y"], {}, {"x": 900, "y": 1100}, PairingWeights(0, 1))
    assert w[0, 1] == pytest.approx(np.exp(-1.0)) and w[0, 2] == pytest.approx(np.exp(-1.0))
    assert w[1, 2] == pytest.approx(np.exp(-2.0))


def test_refusals() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInput, match="two models"):
        choose_pair(rng, ["a"], {}, {}, PairingWeights())
    with pytest.raises(InvalidInput, match="named twice"):
        choose_pair(rng, ["a", "a"], {}, {}, PairingWeights())
    with pytest.raises(InvalidInput, match="0 or more"):
        PairingWeights(-1, 0)
    # Weights that all underflow still give a pair.
    far = {"a": 0.0, "b": 1e6, "c": 2e6, "d": 3e6}
    assert choose_pair(rng, MODELS, {}, far, PairingWeights(0, 50)) in {
        (x, y) for x in MODELS for y in MODELS if x != y
    }
