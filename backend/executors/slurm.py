"""The Slurm executor: one sbatch job per evaluation attempt, running the same child as a local run.

sbatch directly (no pickled functions): the job is a small bash script in the attempt folder that runs
``python -m backend.evaluation.child spec.json`` with the Runner's child environment (exported by sbatch),
logs to the attempt's run.log and writes its exit code beside it. Job states come from squeue (which keeps
ended jobs for MinJobAge), then from sacct when accounting is on, then from the attempt folder itself, so the
backend works with or without Slurm accounting. The attempt folders must be on a filesystem the cluster's
nodes share with the schedulers (LEADERBOARD_WORK_DIR).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.domain import EvalRequest
from backend.errors import ExecutorError
from backend.evaluation.failures import Failure
from backend.evaluation.runner import RunSpec
from backend.executors.interface import (
    JOB_NAME_PREFIX,
    Job,
    JobState,
    JobStatus,
    deployment_tag,
    job_name,
)
from backend.settings import Settings

log = logging.getLogger(__name__)

EXIT_CODE_FILE = "job-exit-code"
ALIVE = {
    "PENDING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED,
    "CONFIGURING": JobState.QUEUED,
    "RESV_DEL_HOLD": JobState.QUEUED,
    "SUSPENDED": JobState.QUEUED,
    "STOPPED": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
}
#: Ends that Slurm knows better than the attempt folder: all transient, as a lost worker is for local runs.
OUTSIDE_ENDS = {
    "CANCELLED": "the Slurm job was cancelled outside the backend",
    "PREEMPTED": "the Slurm job was preempted",
    "NODE_FAIL": "the node of the Slurm job failed",
    "BOOT_FAIL": "the node of the Slurm job failed to boot",
    "OUT_OF_MEMORY": "the Slurm job ran out of host memory (raise LEADERBOARD_SLURM_MEM_GB)",
    "REVOKED": "the Slurm job was revoked",
}


@dataclass(frozen=True)
class SlurmResources:
    """What one evaluation job asks of Slurm."""

    gpus: int
    cpus: int
    mem_gb: int | None
    time_minutes: int
    partition: str | None = None
    account: str | None = None
    extra_options: tuple[str, ...] = ()

    def sbatch_options(self) -> list[str]:
        options = [f"--cpus-per-task={self.cpus}", f"--time={self.time_minutes}"]
        if self.gpus > 0:
            options.append(f"--gres=gpu:{self.gpus}")
        if self.mem_gb is not None:
            options.append(f"--mem={self.mem_gb}G")
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.account:
            options.append(f"--account={self.account}")
        return options + list(self.extra_options)


SIZE_CLASS_FIELDS = {"min_params_b", "gpus", "cpus", "mem_gb", "time_minutes", "partition", "extra_options"}


def size_classes(settings: Settings) -> list[dict[str, Any]]:
    """LEADERBOARD_SLURM_SIZE_CLASSES, checked, smallest first."""
    from backend.errors import ConfigurationError

    if not settings.slurm_size_classes:
        return []
    try:
        classes = json.loads(settings.slurm_size_classes)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"LEADERBOARD_SLURM_SIZE_CLASSES is not JSON: {exc}") from exc
    if not isinstance(classes, list) or not all(
        isinstance(c, dict) and isinstance(c.get("min_params_b"), int | float) and set(c) <= SIZE_CLASS_FIELDS
        for c in classes
    ):
        raise ConfigurationError(
            "LEADERBOARD_SLURM_SIZE_CLASSES must be a JSON list of objects, each with min_params_b and any of "
            + ", ".join(sorted(SIZE_CLASS_FIELDS - {"min_params_b"}))
        )
    return sorted(classes, key=lambda c: c["min_params_b"])


def resources_for(settings: Settings, params_b: float | None) -> SlurmResources:
    """The default resources, overridden by the largest size class the model reaches."""
    time_minutes = settings.slurm_time_minutes or max(1, int(settings.eval_timeout_seconds // 60))
    values: dict[str, Any] = {
        "gpus": settings.slurm_gpus,
        "cpus": settings.slurm_cpus,
        "mem_gb": settings.slurm_mem_gb,
        "time_minutes": time_minutes,
        "partition": settings.slurm_partition,
        "account": settings.slurm_account,
        "extra_options": tuple(shlex.split(settings.slurm_extra_options or "")),
    }
    for size_class in size_classes(settings):
        if params_b is not None and params_b >= size_class["min_params_b"]:
            for key, value in size_class.items():
                if key == "extra_options":
                    values[key] = values[key] + tuple(shlex.split(value))
                elif key != "min_params_b":
                    values[key] = value
    return SlurmResources(**values)


BATCH_SCRIPT = """#!/bin/bash
{directives}
# One evaluation attempt of request {request_id}, written by the leaderboard scheduler.
cd {attempt}
# Torch and tokenizers use the job's CPUs, not every core of a shared node.
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-${{SLURM_CPUS_PER_TASK:-1}}}}
date -u +%s > job-started
{python} -m backend.evaluation.child {spec}
code=$?
echo $code > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}
exit $code
"""


def _exit_code(attempt_dir: Path) -> int | None:
    """The exit code the job script recorded, once the child has ended."""
    try:
        return int((attempt_dir / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


class SlurmExecutor:
    kind = "slurm"
    shared = True

    def __init__(self, settings: Settings, max_jobs: int, python: str | None = None) -> None:
        self.settings = settings
        self.max_jobs = max_jobs
        self.python = python or sys.executable
        self.user = getpass.getuser()
        self.deployment = deployment_tag(settings.work_dir)

    # -- the interface ------------------------------------------------------------------------------
    def free_slots(self, running: list[EvalRequest]) -> int:
        return self.max_jobs - len(running)

    def submit(self, request: EvalRequest, spec: RunSpec, attempt_dir: Path, env: dict[str, str]) -> Job:
        resources = resources_for(self.settings, request.params_b)
        spec = dataclasses.replace(spec, gpus=max(1, resources.gpus))
        attempt_dir.mkdir(parents=True, exist_ok=True)
        spec_path = attempt_dir / "spec.json"
        spec_path.write_text(spec.to_json())
        name = job_name(self.deployment, request.id, request.worker_id)
        directives = [
            f"--job-name={name}",
            f"--output={attempt_dir / 'run.log'}",
            "--open-mode=append",
            f"--chdir={attempt_dir}",
            "--nodes=1",
            "--ntasks=1",
            *resources.sbatch_options(),
        ]
        script = BATCH_SCRIPT.format(
            directives="\n".join(f"#SBATCH {shlex.quote(d)}" for d in directives),
            request_id=request.id,
            attempt=shlex.quote(str(attempt_dir)),
            python=shlex.quote(self.python),
            spec=shlex.quote(str(spec_path)),
            exit_file=shlex.quote(str(attempt_dir / EXIT_CODE_FILE)),
        )
        script_path = attempt_dir / "job.sbatch"
        script_path.write_text(script)
        out = self._command(["sbatch", "--parsable", "--export=ALL", str(script_path)], env=env)
        job_id = out.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise ExecutorError(f"sbatch answered {out.strip()!r} instead of a job id")
        log.info(
            "slurm job submitted",
            extra={
                "request_id": request.id,
                "job_id": job_id,
                "resources": " ".join(resources.sbatch_options()),
            },
        )
        return Job(job_id, name)

    def status(self, jobs: dict[str, Path]) -> dict[str, JobStatus]:
        if not jobs:
            return {}
        listing = {job_id: (state, reason) for job_id, _, state, reason in self.listing()}
        missing = [job_id for job_id in jobs if job_id not in listing]
        if missing:
            listing.update(self._accounting(missing))
        return {
            job_id: job_status(job_id, attempt_dir, *listing.get(job_id, ("", "")))
            for job_id, attempt_dir in jobs.items()
        }

    def cancel(self, job_id: str) -> None:
        try:
            self._command(["scancel", job_id])
        except ExecutorError as exc:
            log.warning("scancel failed", extra={"job_id": job_id, "error": exc.message})
            return
        log.info("slurm job cancelled", extra={"job_id": job_id})

    def release(self, job_id: str) -> None:
        return None  # Slurm forgets ended jobs by itself

    def shutdown(self) -> list[str]:
        return []  # jobs outlive the scheduler: the next one (or another) collects them

    def live_jobs(self) -> list[Job]:
        """This deployment's jobs that Slurm still runs or queues."""
        return [Job(job_id, name) for job_id, name, state, _ in self.listing() if state in ALIVE]

    # -- Slurm's answers ----------------------------------------------------------------------------
    def listing(self) -> list[tuple[str, str, str, str]]:
        """(job id, name, state, reason) of this deployment's jobs (of this user) that the controller still
        knows; another deployment's jobs are neither counted nor stopped."""
        out = self._command(["squeue", "-h", "--states=all", f"--user={self.user}", "-o", "%i|%j|%T|%r"])
        rows = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and parts[1].startswith(f"{JOB_NAME_PREFIX}{self.deployment}-"):
                rows.append((parts[0], parts[1], parts[2], parts[3]))
        return rows

    def _accounting(self, jobs: list[str]) -> dict[str, tuple[str, str]]:
        """States from sacct, when Slurm keeps accounting; {} when it does not."""
        try:
            out = self._command(
                ["sacct", "-n", "-X", "-P", "-j", ",".join(jobs), "-o", "JobID,State,ExitCode"]
            )
        except ExecutorError:
            return {}
        answer = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in jobs:
                answer[parts[0]] = (parts[1].split()[0], f"exit code {parts[2]}")
        return answer

    def _command(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExecutorError(f"`{' '.join(argv)}` could not run: {exc}") from exc
        if done.returncode != 0:
            raise ExecutorError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()[:500]}")
        return done.stdout


def job_status(job_id: str, attempt_dir: Path, state: str, reason: str) -> JobStatus:
    """How a job stands from what Slurm says of it (``state``, ``reason``; empty when the controller and
    accounting no longer know it) and, when that is not enough, from the exit code its attempt folder keeps."""
    detail = f"Slurm job {job_id}: {state or 'unknown to the controller'}" + (
        f" ({reason})" if reason and reason != "None" else ""
    )
    if state in ALIVE:
        return JobStatus(ALIVE[state], detail=detail)
    if state in OUTSIDE_ENDS:
        return JobStatus(
            JobState.ENDED,
            failure=Failure(f"{OUTSIDE_ENDS[state]} ({detail})", transient=True),
            detail=detail,
        )
    if state in ("TIMEOUT", "DEADLINE"):
        return JobStatus(JobState.ENDED, timed_out=True, detail=detail)
    returncode = _exit_code(attempt_dir)
    if state in ("COMPLETED", "FAILED"):
        return JobStatus(
            JobState.ENDED, returncode=returncode if returncode is not None else 1, detail=detail
        )
    if returncode is not None:  # purged from the controller, no accounting: its own record says it ended
        return JobStatus(JobState.ENDED, returncode=returncode, detail=detail)
    return JobStatus(
        JobState.ENDED,
        failure=Failure(
            f"the Slurm job {job_id} is gone without a result (lost node or purged by the controller)",
            transient=True,
        ),
        detail=detail,
    )
