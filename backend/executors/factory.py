"""The executor LEADERBOARD_EXECUTOR names, built from the settings."""

from __future__ import annotations

from pathlib import Path

from backend.domain import EvalRequest
from backend.evaluation.runner import Runner
from backend.executors.interface import Executor
from backend.executors.local import LocalExecutor
from backend.executors.slurm import SlurmExecutor
from backend.settings import Settings


def executor_from_settings(settings: Settings, runner: Runner | None = None) -> Executor:
    if settings.executor == "slurm":
        return SlurmExecutor(settings, settings.slurm_max_jobs)
    work_dir = Path(settings.work_dir).resolve()
    runner = runner or Runner(settings.eval_timeout_seconds, work_dir / "hub-cache")
    gpus = settings.local_gpus.split(",") if settings.local_gpus else None
    return LocalExecutor(runner, settings.local_slots, gpus)


def cancel_job(settings: Settings, request: EvalRequest) -> None:
    """Stop the job of a request that was running, when its executor is a cluster (a Slurm job, by the
    worker id its lease was held under): a local run is stopped by its own scheduler."""
    if request.job_id and (request.worker_id or "").startswith(f"{SlurmExecutor.kind}:"):
        SlurmExecutor(settings, settings.slurm_max_jobs).cancel(request.job_id)
