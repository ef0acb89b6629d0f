"""Re-score one benchmark of stored results from their per-sample outputs, with the current scorers, and
store what changed as new result versions; the earlier versions are kept.

For each request's latest version: the benchmark's tasks are scored again from the stored samples (no
model is loaded, backend.evaluation.rescore); when any metric moved, version N+1 is stored with the new
results, published columns and standard errors, the re-scored samples (written next to the run's), and a
provenance record of the re-score. An unchanged result stores nothing, so re-running a re-score is a no-op.
Publishing the new versions is the caller's (PublishService queues every stored version).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from backend.errors import RescoreError
from backend.evaluation.rescore import Rescorer, samples_by_task, write_samples
from backend.leaderboards.config import LeaderboardConfig, config_hash, load_config
from backend.leaderboards.normalize import normalize, standard_errors
from backend.publish.files import file_time
from backend.services.evaluate import request_dir
from backend.settings import Settings
from backend.storage.evaluations import Evaluation, EvaluationRepository
from backend.storage.requests import RequestRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rescored:
    """One stored result re-scored: its published columns before and after, and what was stored."""

    request_id: int
    model: str
    sha: str
    precision: str
    benchmark: str
    from_version: int  # the version that was re-scored
    version: int | None  # the new version stored; None: nothing changed, or a dry run
    old_scores: dict[str, float | None]
    new_scores: dict[str, float | None]
    results: dict[str, Any]  # the results with the benchmark re-scored

    @property
    def changed(self) -> list[str]:
        """The published columns whose value differs."""
        return [c for c, v in self.new_scores.items() if self.old_scores.get(c) != v]


class RescoreService:
    def __init__(
        self,
        settings: Settings,
        evaluations: EvaluationRepository,
        requests: RequestRepository,
        clock: Callable[[], datetime],
        config: LeaderboardConfig | None = None,
    ) -> None:
        """``config`` defaults to the configured leaderboard's (with the task set it names)."""
        self.settings = settings
        self.evaluations = evaluations
        self.requests = requests
        self.clock = clock
        self._config = config

    @property
    def config(self) -> LeaderboardConfig:
        if self._config is None:
            self._config = load_config(self.settings.config)
        return self._config

    def rescore(
        self, benchmark_key: str, models: Sequence[str] | None = None, *, store: bool = True
    ) -> list[Rescored]:
        """Re-score ``benchmark_key`` of the latest version of every stored result of the configured
        leaderboard (or only those of ``models``), by request; with ``store``, keep what changed as new
        versions."""
        config = self.config
        work_dir = Path(self.settings.work_dir).resolve()
        mirror = Path(self.settings.data_mirror).resolve() if self.settings.data_mirror else None
        rescorer = Rescorer(
            benchmark_key,
            config,
            mirror,
            work_dir / "rescore" / benchmark_key,
        )
        wanted = set(models) if models else None
        out: list[Rescored] = []
        for evaluation in self.evaluations.latest(config.name):
            request = self.requests.get(evaluation.request_id)
            if wanted is not None and request.model not in wanted:
                continue
            results, samples = rescorer.rescore_with_samples(evaluation.results, _samples_files(evaluation))
            stored = None
            if store and _without_rescore_record(results) != _without_rescore_record(evaluation.results):
                stored = self._store(rescorer, evaluation, results, samples, work_dir, request.model)
            out.append(
                Rescored(
                    request_id=request.id,
                    model=request.model,
                    sha=request.sha,
                    precision=request.precision.value,
                    benchmark=benchmark_key,
                    from_version=evaluation.version,
                    version=None if stored is None else stored.version,
                    old_scores=normalize(evaluation.results, config, allow_missing=True),
                    new_scores=normalize(results, config, allow_missing=True),
                    results=results,
                )
            )
            log.info(
                "re-scored",
                extra={"request_id": request.id, "model": request.model, "version": out[-1].version},
            )
        if wanted is not None:
            missing = sorted(wanted - {r.model for r in out})
            if missing:
                raise RescoreError(f"no stored evaluation on {config.name} for {', '.join(missing)}")
        return out

    def _store(
        self,
        rescorer: Rescorer,
        evaluation: Evaluation,
        results: dict[str, Any],
        samples: dict[str, list[dict[str, Any]]],
        work_dir: Path,
        model: str,
    ) -> Evaluation:
        """Version N+1: the new results, the re-scored samples in place of the benchmark's old ones, and a
        provenance record of the re-score appended to those of earlier versions."""
        config, now = self.config, self.clock()
        number = evaluation.version + 1
        folder = request_dir(work_dir, evaluation.request_id) / f"rescore-v{number}-{rescorer.benchmark.key}"
        written = write_samples(samples, folder, file_time(now))
        kept = [
            str(path)
            for task, path in samples_by_task(_samples_files(evaluation)).items()
            if task not in samples
        ]
        record = {
            "benchmark": rescorer.benchmark.key,
            "from_version": evaluation.version,
            "version": number,
            "rescored_at": now.isoformat(),
            "task_set": rescorer.task_set.name,
            "scorers": rescorer.scorers,
            "harness_version": _installed("lm-eval"),
            "command": f"leaderboard rescore --benchmark {rescorer.benchmark.key} --models {model}",
            "samples_files": [str(p) for p in written],  # the re-scored tasks' samples, new in this version
        }
        provenance = {
            **evaluation.provenance,
            "samples_files": sorted(kept + [str(p) for p in written]),
            "rescores": [*evaluation.provenance.get("rescores", []), record],
        }
        return self.evaluations.add_version(
            replace(
                evaluation,
                config_hash=config_hash(config),
                scores=normalize(results, config, allow_missing=True),
                stderrs=standard_errors(results, config, allow_missing=True),
                results=results,
                provenance=provenance,
                version=number,
                recorded_at=now,
                rescored_from=evaluation.id,
                id=None,
            )
        )


def _without_rescore_record(results: dict[str, Any]) -> dict[str, Any]:
    """The results as scored: what re-scoring records about itself left out."""
    return {k: v for k, v in results.items() if k != "rescored"}


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _samples_files(evaluation: Evaluation) -> list[Path]:
    files = evaluation.provenance.get("samples_files") or []
    if not files:
        raise RescoreError(
            f"the evaluation of request {evaluation.request_id} kept no per-sample outputs: re-run it"
        )
    return [Path(f) for f in files]
