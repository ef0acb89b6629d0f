"""The one interface the scheduler runs evaluations through, whatever executes them.

An executor starts the evaluation child of one attempt (``python -m backend.evaluation.child spec.json``,
with the environment the Runner gives it) and reports how its job stands. Every run leaves the same files in
its attempt folder (spec.json, run.log, outcome.json or error.json), so the scheduler collects a local run
and a Slurm job alike, with the Runner's result and the evaluation service's store_and_finish.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from backend.domain import EvalRequest
from backend.evaluation.failures import Failure
from backend.evaluation.runner import RunSpec


class JobState(enum.StrEnum):
    """How a job stands, as far as its executor can tell."""

    QUEUED = "QUEUED"  # accepted, waiting for resources
    RUNNING = "RUNNING"  # executing
    ENDED = (
        "ENDED"  # over: the attempt folder says how (outcome.json or error.json), unless a failure is given
    )
    UNKNOWN = "UNKNOWN"  # this executor does not know the job (another scheduler's local run)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    returncode: int | None = None  # of the child, when known
    timed_out: bool = False  # killed at its time limit
    failure: Failure | None = None  # why the job ended, when the executor knows better than the attempt files
    detail: str = ""  # the executor's own word (e.g. Slurm's state and reason)

    @property
    def alive(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Job:
    """A started run: its executor's job id, and the name it carries there."""

    job_id: str
    name: str


JOB_NAME_PREFIX = "leaderboard-"


def deployment_tag(work_dir: Path) -> str:
    """Eight hex digits naming one deployment: the work folder its schedulers share. Job names carry it, so
    two deployments (staging and production, two leaderboards) running jobs under one cluster user never
    take each other's jobs for orphans, nor count them against their job limit."""
    return hashlib.sha256(str(Path(work_dir).resolve()).encode("utf-8")).hexdigest()[:8]


def job_name(deployment: str, request_id: int, worker_id: str | None) -> str:
    """The name of a run's job: its deployment, its request and the token of the lease it runs under, so a
    job whose request moved on (cancelled, recovered, re-dispatched) can be recognised as an orphan."""
    return f"{JOB_NAME_PREFIX}{deployment}-r{request_id}-{lease_token(worker_id)}"


def lease_token(worker_id: str | None) -> str:
    return (worker_id or "none").rsplit(":", 1)[-1]


def parse_job_name(name: str, deployment: str) -> tuple[int, str] | None:
    """(request id, lease token) from the name of one of ``deployment``'s jobs; None for any other job."""
    own = f"{JOB_NAME_PREFIX}{deployment}-r"
    if not name.startswith(own):
        return None
    request, _, token = name[len(own) :].partition("-")
    return (int(request), token) if request.isdigit() and token else None


class Executor(Protocol):
    """Runs evaluation attempts and reports on them. Methods may be called from several threads."""

    #: the executor's name, and the prefix of the worker ids under which its runs hold their leases
    kind: str
    #: whether every scheduler sees this executor's jobs (a cluster), or only the one that started them
    shared: bool
    #: the deployment its job names carry (deployment_tag): only those jobs are its own
    deployment: str

    def free_slots(self, running: list[EvalRequest]) -> int:
        """How many more runs may start now, given the RUNNING requests of this executor."""
        ...

    def submit(self, request: EvalRequest, spec: RunSpec, attempt_dir: Path, env: dict[str, str]) -> Job:
        """Start the run of ``spec`` (spec.json is written to ``attempt_dir``) with the child environment
        ``env``. Raises ExecutorError when it cannot be started."""
        ...

    def status(self, jobs: dict[str, Path]) -> dict[str, JobStatus]:
        """How each given job (job id -> its attempt folder) stands."""
        ...

    def cancel(self, job_id: str) -> None:
        """Stop a job (queued or running); nothing happens when it is already over."""
        ...

    def release(self, job_id: str) -> None:
        """Forget an ended job once it has been collected."""
        ...

    def live_jobs(self) -> list[Job]:
        """The leaderboard jobs this executor still holds: queued or running, and for a local executor also
        ended and not yet released (the scheduler stops those whose request moved on)."""
        ...

    def shutdown(self) -> list[str]:
        """This process is stopping: stop the runs that cannot outlive it; returns their job ids."""
        ...
