"""Re-scoring: a benchmark's metrics recomputed from stored per-sample outputs with the current scorer.

A run keeps every sample's model output (``samples_<task>_<time>.jsonl``: doc, filtered_resps, ...). When the
project changes how a task is scored (a manifest ``process_results: package.module:function``, see
``backend.evaluation.tasks`` and ``backend.evaluation.materialize``), the stored outputs are scored again, exactly as lm-eval scores them after a
run, and no model is loaded:

    per sample     task.process_results(doc, filtered_resps)          the current task files' scorer
    per task       task.aggregation()[metric] over the samples, and stderr as lm-eval computes it
    per group      the group file's aggregation over its subtasks   (lm-eval's own _process_results)

The Task objects come from lm-eval's TaskManager over freshly materialized task files. Building a task reads
its dataset (few-shot samplers, doc counts): with a data mirror that is local parquet (about 2 s for the 24
BBH tasks); without, the Hub at the pinned revision, or the datasets cache. Only the benchmark's own tasks
are built.

Limits: the scorer is re-run, the filters are not (``filtered_resps`` are scored as stored), so a change to
a task's ``filter_list`` needs a new run. Groups that aggregate more than the benchmark (the reference's
``leaderboard`` group, which no published score reads) keep the run's entry and are listed under
``not_recomputed``. ``n-samples`` and ``configs`` are left as the run recorded them;
what was re-scored, and with which scorers, is recorded under the results' ``"rescored"`` key.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from backend.errors import RescoreError
from backend.evaluation.materialize import materialize
from backend.leaderboards.config import Benchmark, LeaderboardConfig

#: ``samples_<task>_<ISO time with ':' as '-'>.jsonl``, as lm-eval's EvaluationTracker names them.
_SAMPLES_FILE = re.compile(r"^samples_(?P<task>.+)_(?P<time>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")
#: lm-eval's default for simple_evaluate; only non-mean aggregations bootstrap (none in open_llm_v2).
DEFAULT_BOOTSTRAP_ITERS = 100000
_LOGLIKELIHOOD_TYPES = ("loglikelihood", "multiple_choice")


def samples_by_task(samples_files: Iterable[Path | str]) -> dict[str, Path]:
    """The samples file of every task among ``samples_files`` (the latest, when a task has several)."""
    found: dict[str, tuple[str, Path]] = {}
    for item in samples_files:
        path = Path(item)
        match = _SAMPLES_FILE.match(path.name)
        if match is None:
            continue
        task, time = match["task"], match["time"]
        if task not in found or found[task][0] < time:
            found[task] = (time, path)
    return {task: path for task, (_, path) in found.items()}


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The per-sample records of one samples file, in the order lm-eval wrote them."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise RescoreError(f"{path}: the stored samples cannot be read: {exc}") from exc


def _decode(output_type: str, filtered_resps: Sequence[Any]) -> list[Any]:
    """Give back what process_results received: the tracker wrote loglikelihood pairs as strings."""
    if output_type in _LOGLIKELIHOOD_TYPES:
        decoded = []
        for pair in filtered_resps:
            loglikelihood, is_greedy = pair
            decoded.append((float(loglikelihood), is_greedy in (True, "True")))
        return decoded
    if output_type == "loglikelihood_rolling":
        return [float(value) for value in filtered_resps]
    return list(filtered_resps)


def _is_metric(key: str) -> bool:
    return "," in key  # "metric,filter" and "metric_stderr,filter"; alias, name, sample_len are not


class Rescorer:
    """Re-scores one benchmark of many stored evaluations; the benchmark's tasks are built once."""

    def __init__(
        self,
        benchmark_key: str,
        config: LeaderboardConfig,
        data_mirror: Path | None,
        work_dir: Path,
    ) -> None:
        try:
            self.benchmark: Benchmark = config.benchmark(benchmark_key)
        except KeyError:
            known = ", ".join(b.key for b in config.benchmarks)
            raise RescoreError(
                f"{config.name} has no benchmark {benchmark_key!r} (its benchmarks: {known})"
            ) from None
        self.config, self.task_set = config, config.tasks
        self.data_mirror, self.work_dir = data_mirror, Path(work_dir)
        self._loaded: dict[str, Any] | None = None

    @property
    def scorers(self) -> dict[str, str | None]:
        """The project's scorer of each re-scored task; None where the harness's own is used."""
        return {s.name: s.process_results for s in self.benchmark.subtasks}

    def _tasks(self) -> dict[str, Any]:
        if self._loaded is None:
            from lm_eval.tasks import TaskManager

            folder = materialize(self.task_set, self.work_dir / "tasks", self.data_mirror)
            manager = TaskManager(include_path=str(folder), include_defaults=False)
            self._loaded = dict(manager.load([self.benchmark.task]))
            for task in self._loaded["tasks"].values():
                _keep_docs(task)
        return self._loaded

    def rescore(self, results: Mapping[str, Any], samples_files: Sequence[Path | str]) -> dict[str, Any]:
        """A copy of ``results`` whose benchmark entries (subtasks and group) are scored anew."""
        return self._score(results, samples_files)[0]

    def rescore_with_samples(
        self, results: Mapping[str, Any], samples_files: Sequence[Path | str]
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """``rescore``, and every re-scored task's sample records with their metric values scored anew
        (for ``write_samples``)."""
        return self._score(results, samples_files)

    def _score(
        self, results: Mapping[str, Any], samples_files: Sequence[Path | str]
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        from lm_eval.evaluator_utils import _process_results

        loaded = self._tasks()
        files = samples_by_task(samples_files)
        accumulators: dict[str, Any] = {}
        samples: dict[str, list[dict[str, Any]]] = {}
        for name, task in loaded["tasks"].items():
            if name not in files:
                raise RescoreError(
                    f"no stored samples for {name} (benchmark {self.benchmark.display}): re-run the "
                    "evaluation to re-score it"
                )
            raw: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
            records = samples[name] = []
            for sample in read_samples(files[name]):
                try:
                    metrics = task.process_results(
                        sample["doc"], _decode(task.OUTPUT_TYPE, sample["filtered_resps"])
                    )
                    filter_key = sample["filter"]
                except (KeyError, TypeError, ValueError) as exc:
                    raise RescoreError(
                        f"{files[name]}: sample {sample.get('doc_id')} cannot be scored: {exc!r}"
                    ) from exc
                for metric, value in metrics.items():
                    raw[(metric, filter_key)].append(value)
                # lm-eval's sample record: the metric names under "metrics", each value at the top level.
                old_metrics = set(sample.get("metrics") or ())
                kept = {k: v for k, v in sample.items() if k not in old_metrics}
                records.append({**kept, "metrics": list(metrics), **metrics})
            accumulators[name] = {"task": task, "raw_metrics": raw, "logged_samples": []}

        run_config = results.get("config") or {}
        bootstrap = run_config.get("bootstrap_iters", DEFAULT_BOOTSTRAP_ITERS)
        scored = _process_results(accumulators, loaded["groups"], bootstrap).metrics

        rescored: dict[str, Any] = copy.deepcopy(dict(results))
        entries = rescored.setdefault("results", {})
        for name, metrics in scored.items():
            old = entries.get(name, {})
            kept = {k: v for k, v in old.items() if not _is_metric(k)} if old else {"alias": name}
            entries[name] = {**kept, **{k: v for k, v in metrics.items() if _is_metric(k)}}
            if name in rescored.get("groups", {}):
                group = rescored["groups"][name]
                rescored["groups"][name] = {
                    **{k: v for k, v in group.items() if not _is_metric(k)},
                    **{k: v for k, v in metrics.items() if _is_metric(k)},
                }
        # Groups above the benchmark (the run's own, the reference's `leaderboard`) aggregate every benchmark:
        # their entries are the run's, no longer consistent with these tasks, and said so.
        stale = sorted(
            group
            for group, members in (results.get("group_subtasks") or {}).items()
            if group not in scored and isinstance(members, list) and self.benchmark.task in members
        )
        rescored.setdefault("rescored", {})[self.benchmark.key] = {
            "task_set": self.task_set.name,
            "tasks": sorted(scored),
            "scorers": self.scorers,
            "not_recomputed": stale,
        }
        return rescored, samples


def _keep_docs(task: Any) -> None:
    """Process a task's documents once: lm-eval reads ``len(task.eval_docs)`` for every result it aggregates,
    and each read runs the task's ``process_docs`` over its dataset again (about 40 ms for GPQA), once per
    re-scored model otherwise."""
    for split in ("test_docs", "validation_docs"):
        has = getattr(task, f"has_{split}", None)
        if has is not None and has():
            docs = getattr(task, split)()
            setattr(task, split, lambda docs=docs: docs)


def write_samples(
    samples: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: Path, label: str
) -> list[Path]:
    """Sample records written as lm-eval writes them: ``out_dir/samples_<task>_<label>.jsonl`` (label: an ISO
    time with '-' for ':'), one JSON object per line; the files written."""
    from lm_eval.utils import handle_non_serializable

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, records in sorted(samples.items()):
        path = out_dir / f"samples_{name}_{label}.jsonl"
        lines = (json.dumps(r, default=handle_non_serializable, ensure_ascii=False) for r in records)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written.append(path)
    return written
