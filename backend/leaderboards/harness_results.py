"""Reading lm-eval results: the aggregated results file, or the dict simple_evaluate returns.

Tolerant of what it does not need (unknown fields, extra tasks, "N/A" or missing standard errors, numbers
written as strings), strict about what it does: a missing task, metric or sample count, or a score that is
not a finite number, is a ResultsFormatError that names the task and the metric.

What is read (lm-eval 0.4.x):
    results[<task or group>]["<metric>,<filter>"]          the score (a bare "<metric>" key for filter none)
    results[<task or group>]["<metric>_stderr,<filter>"]   its standard error: a number, or "N/A"
    groups[<group>]                                         group entries (also under results)
    n-samples[<task>]["effective"] (else "original")       samples evaluated (else results[task]["sample_len"])
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import IncompleteResults, ResultsFormatError

_NO_VALUE = {"", "n/a", "na", "nan", "none", "null"}


@dataclass(frozen=True)
class HarnessResults:
    """The per-task entries and sample counts of one lm-eval run."""

    source: str  # names the file (or "results dict") in messages
    entries: Mapping[str, Any]  # task or group name -> its entry ("metric,filter" -> value)
    n_samples: Mapping[str, Any]  # task name -> {"original": n, "effective": n}

    def has(self, task: str) -> bool:
        """Whether the results hold an entry for `task` (reading it may still fail if it is malformed)."""
        return self.entries.get(task) is not None

    def _entry(self, task: str, needed: str) -> Mapping[str, Any]:
        entry = self.entries.get(task)
        if entry is None:
            raise IncompleteResults(f"{self.source}: no results for task '{task}' (needed: {needed})")
        if not isinstance(entry, Mapping):
            raise ResultsFormatError(f"{self.source}: results['{task}'] is not an object, got {entry!r:.80}")
        return entry

    def score(self, task: str, metric: str, filter: str = "none") -> float:
        """The value of `metric` under `filter` for `task`: a finite number, or ResultsFormatError."""
        key = f"{metric},{filter}"
        entry = self._entry(task, f"metric '{key}'")
        value = entry.get(key)
        if value is None and filter == "none":
            value = entry.get(metric)  # results written before lm-eval 0.4 had bare metric keys
        if value is None:
            present = sorted(k for k in entry if "," in k and "_stderr," not in k)
            raise ResultsFormatError(
                f"{self.source}: task '{task}' has no metric '{key}' (it has: {', '.join(present) or 'none'})"
            )
        number = _number(value)
        if number is None:
            raise ResultsFormatError(
                f"{self.source}: task '{task}', metric '{key}' is {value!r:.80}, not a number"
            )
        return number

    def stderr(self, task: str, metric: str, filter: str = "none") -> float | None:
        """The standard error of `metric`, or None where the harness gave none ("N/A", missing, invalid)."""
        entry = self.entries.get(task)
        if not isinstance(entry, Mapping):
            return None
        value = entry.get(f"{metric}_stderr,{filter}")
        if value is None and filter == "none":
            value = entry.get(f"{metric}_stderr")
        number = _number(value)
        return number if number is not None and number >= 0 else None

    def has_sample_count(self, task: str) -> bool:
        """Whether the results say how many samples `task` evaluated (see sample_count)."""
        try:
            self.sample_count(task)
        except ResultsFormatError:
            return False
        return True

    def sample_count(self, task: str) -> int:
        """Samples evaluated for `task`: n-samples effective, else original, else the entry's sample_len."""
        counts = self.n_samples.get(task)
        candidates: list[Any] = []
        if isinstance(counts, Mapping):
            candidates += [counts.get("effective"), counts.get("original")]
        entry = self.entries.get(task)
        if isinstance(entry, Mapping):
            candidates.append(entry.get("sample_len"))
        for value in candidates:
            number = _number(value)
            if number is not None and number >= 1 and number == int(number):
                return int(number)
        raise ResultsFormatError(
            f"{self.source}: no sample count for task '{task}' (n-samples['{task}']['effective'] is missing "
            "or not a positive integer); it is needed to weight the task by its size"
        )


def _number(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None for anything else ("N/A", NaN, objects)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        if value.strip().lower() in _NO_VALUE:
            return None
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def parse_results(data: Any, source: str = "results dict") -> HarnessResults:
    """Read a results dict (simple_evaluate's return value, or a parsed results_<time>.json)."""
    if isinstance(data, HarnessResults):
        return data
    if not isinstance(data, Mapping):
        raise ResultsFormatError(
            f"{source}: expected a JSON object with a 'results' field, got {type(data).__name__}"
        )
    results = data.get("results")
    if not isinstance(results, Mapping):
        raise ResultsFormatError(
            f"{source}: no 'results' object: this is not an lm-eval results file "
            "(expected the results_<time>.json written by the harness)"
        )
    groups = data.get("groups")
    entries: dict[str, Any] = dict(groups) if isinstance(groups, Mapping) else {}
    entries.update(results)  # "results" holds tasks and groups alike; it wins where both have a name
    n_samples = data.get("n-samples")
    return HarnessResults(
        source=source,
        entries=entries,
        n_samples=dict(n_samples) if isinstance(n_samples, Mapping) else {},
    )


def read_results_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of an aggregated results file (results_<time>.json, as
    EvaluationTracker.save_results_aggregated writes it): every field, for provenance and for normalize()."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFormatError(f"{path}: cannot read the results file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(
            f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
            "expected the results_<time>.json written by lm-eval"
        ) from exc
    if not isinstance(data, dict):
        raise ResultsFormatError(
            f"{path}: expected a JSON object with a 'results' field, got {type(data).__name__}"
        )
    return data


def load_results(path: str | Path) -> HarnessResults:
    """Read and parse an aggregated results file; messages name the file."""
    return parse_results(read_results_file(path), source=str(path))
