"""From lm-eval results to a leaderboard's published scores, as its config declares them.

    a task's raw score   x   = mean of the benchmark's metrics ("<metric>,<filter>") for that task
    a benchmark's raw    R   = sum(w_i x_i) / sum(w_i) over its subtasks; w_i = n-samples of subtask i
                               (aggregate: sample_weighted) or 1 (aggregate: mean)
    norm(x, lb)              = max(x - lb, 0) / (1 - lb) * 100, lb = 1/num_choices (0 for generative tasks)
    the benchmark's score    = per_subtask: sum(w_i norm(x_i, lb_i)) / sum(w_i); aggregate: norm(R, lb)
    the average              = plain mean of the benchmark scores

Raw columns are fractions (0..1), normalized columns and the average are points (0..100); nothing is
rounded (round when displaying). Sample-weighted raw scores are recomputed from the subtasks, so a results
file with or without lm-eval's group entries gives the same numbers; a group entry is read only when its
subtasks are absent, and only where it means the same thing (sample_weighted, normalize: aggregate).

Missing benchmarks: by default a benchmark none of whose tasks are in the results raises IncompleteResults
(an incomplete run must not be published as if it were whole). With allow_missing=True its columns and the
average are None instead. A benchmark with only some of its subtasks always raises: a score from part of a
benchmark would look like a real one.

Standard errors (standard_errors()) are propagated from the harness's per-task standard errors s_i, treating
subtasks as independent and the sample counts as fixed:
    a task with several metrics   s = mean of the metrics' s      (an upper bound: they are correlated)
    a benchmark's raw             sqrt(sum((w_i s_i)^2)) / sum(w_i)
    per_subtask score             sqrt(sum((w_i s_i * 100/(1 - lb_i))^2)) / sum(w_i)
    aggregate score               raw stderr * 100/(1 - lb)     (the slope of norm; clipping at 0 is ignored)
    the average                   sqrt(sum(s_b^2)) / number of benchmarks
A value is None when any standard error it needs is missing or "N/A" (lm-eval 0.4.13 gives none for
IFEval's inst_level_strict_acc, so IFEval's and the average's are None for IFEval runs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.errors import IncompleteResults, ResultsFormatError
from backend.evaluation.tasks import Subtask
from backend.leaderboards.config import (
    Aggregation,
    Benchmark,
    LeaderboardConfig,
    Normalization,
)
from backend.leaderboards.harness_results import HarnessResults, parse_results


@dataclass(frozen=True)
class BenchmarkScore:
    """One benchmark's raw score (a fraction), normalized score (points) and their standard errors."""

    raw: float
    normalized: float
    raw_stderr: float | None
    stderr: float | None
    # Why it was read from lm-eval's group entry instead of computed from the subtasks (None: it was not):
    # the subtasks are absent, or their sample counts are, which the sample-weighted mean needs.
    from_group_entry: str | None = None


def norm(x: float, num_choices: int) -> float:
    """Chance-level normalization: 0 at random guessing (1/num_choices; 0 for generative), 100 at perfect."""
    lb = 1.0 / num_choices if num_choices else 0.0
    return max(x - lb, 0.0) / (1.0 - lb) * 100.0


def _slope(subtask: Subtask) -> float:
    return 100.0 / (1.0 - subtask.chance)


def _task_score(results: HarnessResults, benchmark: Benchmark, task: str) -> tuple[float, float | None]:
    values, errors = [], []
    for metric in benchmark.metrics:
        value = results.score(task, metric, benchmark.filter)
        if not 0.0 <= value <= 1.0:
            raise ResultsFormatError(
                f"{results.source}: task '{task}', metric '{metric},{benchmark.filter}' is {value}: "
                "leaderboard scores are fractions between 0 and 1"
            )
        values.append(value)
        errors.append(results.stderr(task, metric, benchmark.filter))
    stderr = None if any(e is None for e in errors) else sum(e for e in errors if e is not None) / len(errors)
    return sum(values) / len(values), stderr


def _weighted(values: Sequence[float], weights: Sequence[float]) -> float:
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)


def _weighted_stderr(errors: Sequence[float | None], weights: Sequence[float]) -> float | None:
    if any(e is None for e in errors):
        return None
    return math.sqrt(sum((w * e) ** 2 for w, e in zip(weights, errors, strict=True) if e is not None)) / sum(
        weights
    )


def _from_subtasks(results: HarnessResults, benchmark: Benchmark) -> BenchmarkScore:
    scores = [_task_score(results, benchmark, s.name) for s in benchmark.subtasks]
    values = [x for x, _ in scores]
    errors = [s for _, s in scores]
    if benchmark.aggregate is Aggregation.SAMPLE_WEIGHTED and len(benchmark.subtasks) > 1:
        weights = [float(results.sample_count(s.name)) for s in benchmark.subtasks]
    else:
        weights = [1.0] * len(benchmark.subtasks)
    raw = _weighted(values, weights)
    raw_stderr = _weighted_stderr(errors, weights)
    if benchmark.normalize is Normalization.PER_SUBTASK:
        normalized = _weighted(
            [norm(x, s.num_choices) for x, s in zip(values, benchmark.subtasks, strict=True)], weights
        )
        scaled = [
            None if e is None else e * _slope(s) for e, s in zip(errors, benchmark.subtasks, strict=True)
        ]
        stderr = _weighted_stderr(scaled, weights)
    else:
        first = benchmark.subtasks[0]
        normalized = norm(raw, first.num_choices)
        stderr = None if raw_stderr is None else raw_stderr * _slope(first)
    return BenchmarkScore(raw, normalized, raw_stderr, stderr)


def _group_entry_usable(benchmark: Benchmark) -> bool:
    # lm-eval's leaderboard groups weight by size; a per-subtask normalization needs the subtasks themselves.
    return (
        benchmark.is_group
        and benchmark.aggregate is Aggregation.SAMPLE_WEIGHTED
        and benchmark.normalize is Normalization.AGGREGATE
    )


def _is_absent(results: HarnessResults, benchmark: Benchmark) -> bool:
    return not any(results.has(t) for t in (benchmark.task, *(s.name for s in benchmark.subtasks)))


def _from_group_entry(results: HarnessResults, benchmark: Benchmark, why: str) -> BenchmarkScore:
    raw, raw_stderr = _task_score(results, benchmark, benchmark.task)
    slope = _slope(benchmark.subtasks[0])
    return BenchmarkScore(
        raw=raw,
        normalized=norm(raw, benchmark.subtasks[0].num_choices),
        raw_stderr=raw_stderr,
        stderr=None if raw_stderr is None else raw_stderr * slope,
        from_group_entry=f"{benchmark.display}: {why}; read lm-eval's group entry '{benchmark.task}' (the "
        "sample-weighted value the harness computed)",
    )


def _lacks_counts(results: HarnessResults, benchmark: Benchmark) -> list[str]:
    """The subtasks whose sample counts a sample-weighted mean needs and the results do not give."""
    if benchmark.aggregate is not Aggregation.SAMPLE_WEIGHTED or len(benchmark.subtasks) < 2:
        return []
    return [s.name for s in benchmark.subtasks if not results.has_sample_count(s.name)]


def score_benchmark(results: HarnessResults, benchmark: Benchmark) -> BenchmarkScore:
    """Score one benchmark; IncompleteResults when its subtasks are not all there (and no usable group).

    Where the subtasks (or their sample counts) are missing and lm-eval's group entry means what the config
    computes (sample-weighted, normalized on the aggregate), the harness's own number is used, and said so.
    """
    missing = [s.name for s in benchmark.subtasks if not results.has(s.name)]
    usable_group = _group_entry_usable(benchmark) and results.has(benchmark.task)
    if not missing:
        uncounted = _lacks_counts(results, benchmark)
        if uncounted and usable_group:
            return _from_group_entry(results, benchmark, f"no sample counts for {', '.join(uncounted)}")
        return _from_subtasks(results, benchmark)
    if usable_group:
        return _from_group_entry(results, benchmark, f"no results for {', '.join(missing)}")
    if _is_absent(results, benchmark):
        names = ", ".join(dict.fromkeys([benchmark.task, *missing]))
        raise IncompleteResults(
            f"{results.source}: no results for benchmark '{benchmark.display}' (none of {names}): "
            "run it, or allow missing benchmarks"
        )
    why = ""
    if results.has(benchmark.task) and benchmark.is_group:
        why = f" (its group entry '{benchmark.task}' cannot stand in: the config scores it from each subtask)"
    raise IncompleteResults(
        f"{results.source}: benchmark '{benchmark.display}' lacks {len(missing)} of its "
        f"{len(benchmark.subtasks)} subtasks: {', '.join(missing)}{why}"
    )


def score_benchmarks(
    results: Mapping[str, Any] | HarnessResults, config: LeaderboardConfig, *, allow_missing: bool = False
) -> dict[str, BenchmarkScore | None]:
    """Every benchmark's scores, by benchmark key; None for an absent benchmark when allow_missing."""
    parsed = parse_results(results)
    scores: dict[str, BenchmarkScore | None] = {}
    for benchmark in config.benchmarks:
        if allow_missing and _is_absent(parsed, benchmark):
            scores[benchmark.key] = None
        else:
            scores[benchmark.key] = score_benchmark(parsed, benchmark)
    return scores


def normalize(
    results: Mapping[str, Any] | HarnessResults, config: LeaderboardConfig, *, allow_missing: bool = False
) -> dict[str, float | None]:
    """The published score columns, in columns(config) order: raw fractions, normalized points, the average.

    `results` is simple_evaluate's dict, a parsed results_<time>.json, or HarnessResults.
    """
    scores = score_benchmarks(results, config, allow_missing=allow_missing)
    row: dict[str, float | None] = {}
    for b in config.benchmarks:
        score = scores[b.key]
        row[b.raw_column] = None if score is None else score.raw
        row[b.column] = None if score is None else score.normalized
    normalized = [s.normalized for s in scores.values() if s is not None]
    complete = len(normalized) == len(config.benchmarks)
    row[config.average.column] = sum(normalized) / len(normalized) if complete else None
    return row


def standard_errors(
    results: Mapping[str, Any] | HarnessResults, config: LeaderboardConfig, *, allow_missing: bool = False
) -> dict[str, float | None]:
    """Standard errors of the published columns, in stderr_columns(config) order: "<display> Raw stderr"
    (a fraction), "<display> stderr" (points), "<average> stderr" (points). See the module docstring."""
    scores = score_benchmarks(results, config, allow_missing=allow_missing)
    row: dict[str, float | None] = {}
    for b in config.benchmarks:
        score = scores[b.key]
        row[b.raw_stderr_column] = None if score is None else score.raw_stderr
        row[b.stderr_column] = None if score is None else score.stderr
    errors = [None if s is None else s.stderr for s in scores.values()]
    row[config.average.stderr_column] = (
        None
        if any(e is None for e in errors)
        else math.sqrt(sum(e**2 for e in errors if e is not None)) / len(errors)
    )
    return row
