"""The local executor: evaluation children on this machine, N slots, each with its own GPU or the CPU.

Its jobs live in this process (they die with it), so only the scheduler that started a local run can see
it: another scheduler answers UNKNOWN, and a run whose scheduler died is recovered by its expired lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.domain import EvalRequest
from backend.errors import ExecutorError
from backend.evaluation.runner import Runner, RunSpec
from backend.executors.interface import Job, JobState, JobStatus, job_name

log = logging.getLogger(__name__)


@dataclass
class _LocalJob:
    name: str
    process: subprocess.Popen[bytes]
    slot: int
    deadline: float
    timed_out: bool = False
    stopped: bool = False
    returncode: int | None = field(default=None)


class LocalExecutor:
    kind = "local"
    shared = False
    deployment = "local"  # its jobs are this process's children: no other deployment sees them

    def __init__(self, runner: Runner, slots: int, gpus: list[str] | None = None) -> None:
        if gpus is not None and len(gpus) < slots:
            raise ExecutorError(
                f"LEADERBOARD_LOCAL_GPUS names {len(gpus)} GPU(s) for {slots} slots: name one GPU per slot"
            )
        self.runner = runner
        self.slots = slots
        self.gpus = gpus
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()

    def free_slots(self, running: list[EvalRequest]) -> int:
        with self._lock:
            return self.slots - len(self._jobs)

    def submit(self, request: EvalRequest, spec: RunSpec, attempt_dir: Path, env: dict[str, str]) -> Job:
        with self._lock:
            used = {job.slot for job in self._jobs.values()}
            free = [slot for slot in range(self.slots) if slot not in used]
            if not free:
                raise ExecutorError(f"all {self.slots} local slots are busy")
            slot = free[0]
            extra = dict(env)
            if self.gpus is not None:
                extra["CUDA_VISIBLE_DEVICES"] = self.gpus[slot]
            try:
                process = self.runner.launch(spec, attempt_dir, extra)
            except OSError as exc:
                raise ExecutorError(f"the evaluation child could not be started: {exc}") from exc
            job_id = f"local-{os.getpid()}-{process.pid}"
            name = job_name(self.deployment, request.id, request.worker_id)
            deadline = time.monotonic() + self.runner.timeout_seconds
            self._jobs[job_id] = _LocalJob(name, process, slot, deadline)
        log.info("local run started", extra={"request_id": request.id, "job_id": job_id, "slot": slot})
        return Job(job_id, name)

    def status(self, jobs: dict[str, Path]) -> dict[str, JobStatus]:
        answer = {}
        with self._lock:
            for job_id in jobs:
                job = self._jobs.get(job_id)
                if job is None:
                    answer[job_id] = JobStatus(JobState.UNKNOWN)
                    continue
                if job.returncode is None:
                    job.returncode = job.process.poll()
                if job.returncode is None and time.monotonic() > job.deadline:
                    job.timed_out = True
                    job.returncode = self._kill(job)
                if job.returncode is None:
                    answer[job_id] = JobStatus(JobState.RUNNING, detail=f"pid {job.process.pid}")
                else:
                    answer[job_id] = JobStatus(
                        JobState.ENDED, returncode=job.returncode, timed_out=job.timed_out
                    )
        return answer

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.returncode is None:
                job.stopped = True
                job.returncode = self._kill(job)

    def release(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None and job.process.poll() is None:
            self._kill(job)

    def live_jobs(self) -> list[Job]:
        with self._lock:
            return [Job(job_id, job.name) for job_id, job in self._jobs.items()]

    def shutdown(self) -> list[str]:
        with self._lock:
            stopped = [job_id for job_id, job in self._jobs.items() if job.process.poll() is None]
            for job_id in stopped:
                self._kill(self._jobs[job_id])
            self._jobs.clear()
        return stopped

    @staticmethod
    def _kill(job: _LocalJob) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.process.pid, signal.SIGKILL)
        return job.process.wait()
