"""Re-score one benchmark of stored evaluations from their per-sample outputs, with the current scorers.

Nothing is stored or published here: each result carries the old and new published columns and the new
results dict, for whoever stores the new version. No model is loaded (backend.evaluation.rescore).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.evaluation.rescore import RescoreError, Rescorer
from backend.evaluation.tasks import TaskSet, load_task_set
from backend.leaderboards.config import LeaderboardConfig, load_config
from backend.leaderboards.normalize import normalize
from backend.settings import Settings
from backend.storage.evaluations import Evaluation, EvaluationRepository
from backend.storage.requests import RequestRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rescored:
    """One stored evaluation re-scored: its published columns before and after, and the new results."""

    request_id: int
    model: str
    sha: str
    precision: str
    benchmark: str
    old_scores: dict[str, float | None]
    new_scores: dict[str, float | None]
    results: dict[str, Any]  # the evaluation's results with the benchmark re-scored

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
        config: LeaderboardConfig | None = None,
        task_set: TaskSet | None = None,
    ) -> None:
        """``config`` and ``task_set`` default to the configured leaderboard's and its task set."""
        self.settings = settings
        self.evaluations = evaluations
        self.requests = requests
        self._config = config
        self._task_set = task_set

    @property
    def config(self) -> LeaderboardConfig:
        if self._config is None:
            self._config = load_config(self.settings.leaderboard)
        return self._config

    def rescore(self, benchmark_key: str, models: Sequence[str] | None = None) -> list[Rescored]:
        """Re-score ``benchmark_key`` for every stored evaluation of the configured leaderboard (or only
        those of ``models``), oldest first."""
        config = self.config
        mirror = Path(self.settings.data_mirror).resolve() if self.settings.data_mirror else None
        rescorer = Rescorer(
            benchmark_key,
            config,
            self._task_set or load_task_set(config.task_set),
            mirror,
            Path(self.settings.work_dir).resolve() / "rescore" / benchmark_key,
        )
        wanted = set(models) if models else None
        out: list[Rescored] = []
        for evaluation in self.evaluations.all(config.name):
            request = self.requests.get(evaluation.request_id)
            if wanted is not None and request.model not in wanted:
                continue
            results = rescorer.rescore(evaluation.results, _samples_files(evaluation))
            out.append(
                Rescored(
                    request_id=request.id,
                    model=request.model,
                    sha=request.sha,
                    precision=request.precision.value,
                    benchmark=benchmark_key,
                    old_scores=normalize(evaluation.results, config, allow_missing=True),
                    new_scores=normalize(results, config, allow_missing=True),
                    results=results,
                )
            )
            log.info("re-scored", extra={"request_id": request.id, "model": request.model})
        if wanted is not None:
            missing = sorted(wanted - {r.model for r in out})
            if missing:
                raise RescoreError(f"no stored evaluation on {config.name} for {', '.join(missing)}")
        return out


def _samples_files(evaluation: Evaluation) -> list[Path]:
    files = evaluation.provenance.get("samples_files") or []
    if not files:
        raise RescoreError(
            f"the evaluation of request {evaluation.request_id} kept no per-sample outputs: re-run it"
        )
    return [Path(f) for f in files]
