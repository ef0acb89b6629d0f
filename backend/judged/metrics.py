"""AlpacaEval 2's metrics of one model's annotations, exactly as alpaca-eval 0.6.6 computes them.

``win_rate`` is alpaca_eval.metrics.get_winrate (the absolute scoring rule, and the zero-one rule for
``discrete_win_rate``); ``avg_length`` is what alpaca_eval.main.evaluate stores (the mean number of characters
of the model's outputs, truncated to an integer); the length-controlled win rate is in ``glm``. A value
alpaca-eval would give as NaN (no judged record, or one: no standard error) is None here, null in JSON.
The statistics are pandas' (mean, std and sem with ddof 1), written with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WinRate:
    """get_winrate's answer. Records without a preference count in none of these."""

    win_rate: float | None  # 100 * mean(p - 1), a draw (0 or 1.5) counting 0.5
    standard_error: float | None  # 100 * the standard error of that mean (ddof 1)
    n_wins: int  # p > 1.5: output_2 (the model) preferred
    n_wins_base: int  # p < 1.5: output_1 (the reference) preferred
    n_draws: int  # p is 0 or 1.5
    n_total: int  # records with a preference
    discrete_win_rate: float | None  # 100 * (n_wins + n_draws / 2) / n_total


def mean(values: np.ndarray) -> float | None:
    """pandas' Series.mean; None (pandas: NaN) for no values."""
    return float(values.sum() / len(values)) if len(values) else None


def std(values: np.ndarray) -> float | None:
    """pandas' Series.std (ddof 1); None (pandas: NaN) for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    centre = values.sum() / n
    return float(np.sqrt(((values - centre) ** 2).sum() / (n - 1)))


def sem(values: np.ndarray) -> float | None:
    """pandas' Series.sem (ddof 1); None (pandas: NaN) for fewer than two values."""
    deviation = std(values)
    return None if deviation is None else deviation / math.sqrt(len(values))


def percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def win_rate(preferences: Sequence[float | None]) -> WinRate:
    """alpaca_eval.metrics.get_winrate: 0 is a draw like 1.5; records without a preference are dropped."""
    judged = np.array([p for p in preferences if p is not None], dtype=float)
    n_draws = int(((judged == 0) | (judged == 1.5)).sum())
    # The absolute scoring rule: a draw is 1.5, the score is p - 1 in [0, 1].
    absolute = np.where(judged == 0, 1.5, judged) - 1
    # The zero-one rule: a draw stays a draw, anything else is rounded to 1 or 2 (p > 1.5 wins).
    discrete = np.where(absolute == 0.5, 0.5, np.round(absolute))
    return WinRate(
        win_rate=percent(mean(absolute)),
        standard_error=percent(sem(absolute)),
        n_wins=int((absolute > 0.5).sum()),
        n_wins_base=int((absolute < 0.5).sum()),
        n_draws=n_draws,
        n_total=len(judged),
        discrete_win_rate=percent(mean(discrete)),
    )


def avg_length(outputs: Sequence[str]) -> int:
    """What alpaca_eval.main.evaluate stores: int(mean number of characters), over every output."""
    return int(sum(len(o) for o in outputs) / len(outputs))
