"""Summaries of repeated measurements: medians, percentiles and spread, never a single run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of per-call latencies, in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the interquartile range of repeated measurements."""
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "iqr": percentile(values, 75) - percentile(values, 25),
    }


def target(value: float, limit: float, *, at_most: bool = True) -> dict[str, Any]:
    """Whether ``value`` meets a target (at most, or at least, ``limit``), and by how much it misses it:
    the difference in the value's own unit, and as a factor (2.0: twice the target's time)."""
    met = value <= limit if at_most else value >= limit
    return {
        "target": f"{'<=' if at_most else '>='} {limit:g}",
        "value": value,
        "met": met,
        "missed_by": 0.0 if met else abs(value - limit),
        "missed_by_factor": 1.0 if met else (value / limit if at_most else limit / value),
    }
