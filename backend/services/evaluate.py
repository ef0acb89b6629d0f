"""The worker: claim the top-ranked request, run the pinned harness on it, normalize and store the scores.

claim -> run (child process, heartbeat thread holding the lease) -> parse -> normalize -> store scores,
raw results and per-sample details with the FINISHED transition, in one transaction. A failed run goes back
to the queue when its cause is transient and attempts remain, else it fails with a reason (no server
paths: everyone reads it), and its log path and tail beside it. An ended run is recorded through a database
outage (retried with backoff): its outcome is on disk, and dropping it would re-run the request after its
lease expired, using up an attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from backend.domain import EvalRequest
from backend.errors import (
    AlreadyEvaluated,
    DatabaseUnavailable,
    LeaderboardError,
    LeaseLost,
)
from backend.evaluation.runner import Runner, RunResult, RunSpec
from backend.judged.config import JUDGED_NEEDS_CHAT_TEMPLATE
from backend.retry import Backoff
from backend.services.queue import QueueService
from backend.services.redact import strip_server_paths
from backend.settings import Settings
from backend.storage.evaluations import Evaluation, EvaluationRepository

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lease(threading.Thread):
    """Heart-beats a claimed request until stopped; notices when the lease is lost."""

    def __init__(self, queue: QueueService, request_id: int, worker_id: str, interval: float) -> None:
        super().__init__(name=f"lease-{request_id}", daemon=True)
        self.queue, self.request_id, self.worker_id, self.interval = queue, request_id, worker_id, interval
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.queue.heartbeat(self.request_id, self.worker_id)
            except LeaseLost:
                log.warning("lease lost", extra={"request_id": self.request_id, "worker": self.worker_id})
                self.lost.set()
                return
            except DatabaseUnavailable as exc:  # a restarting database: keep running, beat again later
                log.warning("heartbeat failed", extra={"request_id": self.request_id, "error": exc.message})

    def stop(self) -> None:
        self._halt.set()
        self.join()


def request_dir(work_dir: Path, request_id: int) -> Path:
    """Where everything of one request's runs (attempts, request cache, re-scored samples) is kept."""
    return work_dir / "runs" / f"request-{request_id}"


class EvaluationService:
    def __init__(
        self,
        settings: Settings,
        queue: QueueService,
        evaluations: EvaluationRepository,
        clock: Callable[[], datetime],
        runner: Runner | None = None,
        publish: Callable[[], object] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``publish``, when given, is called after each evaluation stored (LEADERBOARD_PUBLISH_AFTER_EVALUATION);
        its failures are logged, never fatal: what it could not deliver waits in the outbox. ``sleep`` waits
        between two attempts to record an ended run (LEADERBOARD_STORE_RETRY_*)."""
        self.settings = settings
        self.store_retry = Backoff(
            settings.store_retry_attempts, settings.store_retry_base_seconds, settings.store_retry_max_seconds
        )
        self.sleep = sleep
        self.publish = publish
        self.queue = queue
        self.evaluations = evaluations
        self.clock = clock
        self.work_dir = Path(settings.work_dir).resolve()
        key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else None
        self.runner = runner or Runner(settings.eval_timeout_seconds, self.work_dir / "hub-cache", key)

    def run_settings(self, folder: Path, attempt: str) -> dict[str, Any]:
        """The RunSpec fields that come from settings, for a run kept in ``folder``: one mapping for the
        worker and for `leaderboard run`, so a reproduction runs exactly as the worker did."""
        settings = self.settings
        cache = settings.judge_cache or Path(settings.work_dir) / "judgements.sqlite"
        return {
            "leaderboard": settings.config,
            "judged": settings.judged_leaderboards,
            "judge_base_url": settings.judge_base_url,
            "judge_model": settings.judge_model,
            "judge_concurrency": settings.judge_concurrency,
            "judge_price_input_per_1k": settings.judge_price_input_per_1k,
            "judge_price_output_per_1k": settings.judge_price_output_per_1k,
            "judge_cache": str(Path(cache).resolve()),
            "output_dir": str(folder / attempt),
            "cache_path": str(folder / "request-cache" / "lm-cache"),
            "data_mirror": str(Path(settings.data_mirror).resolve()) if settings.data_mirror else None,
            "model_store": str(Path(settings.model_store).resolve()) if settings.model_store else None,
            "limit": settings.eval_limit,
            "device": settings.eval_device,
            "batch_size": settings.eval_batch_size,
            "max_batch_size": settings.eval_max_batch_size,
            "backend": settings.eval_backend,
        }

    def spec(self, request: EvalRequest) -> RunSpec:
        run = self.run_settings(self.request_dir(request.id), f"attempt-{request.attempts}")
        if not request.use_chat_template:  # a judged leaderboard compares chat answers: none without it
            run["judged"] = ()
        return RunSpec.from_request(request, **run)

    def judged_skipped(self, request: EvalRequest, spec: RunSpec) -> dict[str, str]:
        """The deployment's judged leaderboards this request is not evaluated on, with the rule."""
        return {
            name: JUDGED_NEEDS_CHAT_TEMPLATE
            for name in self.settings.judged_leaderboards
            if name not in spec.judged
        }

    def request_dir(self, request_id: int) -> Path:
        return request_dir(self.work_dir, request_id)

    def work_once(self, worker_id: str) -> EvalRequest | None:
        """Recover stalled runs, then claim and evaluate one request; None when the queue is empty."""
        self.queue.recover_stalled()
        request = self.queue.claim(worker_id)
        if request is None:
            return None
        return self.evaluate(request, worker_id)

    def work_forever(self, worker_id: str, stop: threading.Event) -> None:
        """Work until ``stop`` is set; an unreachable database is waited out, never a reason to exit."""
        while not stop.is_set():
            try:
                worked = self.work_once(worker_id)
            except DatabaseUnavailable as exc:
                log.warning(
                    "database unavailable; retrying", extra={"worker": worker_id, "error": exc.message}
                )
                worked = None
            if worked is None:
                stop.wait(self.settings.worker_poll_seconds)

    def evaluate(self, request: EvalRequest, worker_id: str) -> EvalRequest:
        spec = self.spec(request)
        Path(spec.cache_path).parent.mkdir(parents=True, exist_ok=True)
        lease = Lease(self.queue, request.id, worker_id, self.settings.heartbeat_seconds)
        lease.start()
        try:
            result = self.runner.run(spec, Path(spec.output_dir), keep_going=lambda: not lease.lost.is_set())
        except KeyboardInterrupt:  # the worker is being stopped: hand the request back at once
            lease.stop()
            if not lease.lost.is_set():
                self.queue.fail(
                    request.id, worker_id, "the worker was stopped during the run", transient=True
                )
            raise
        finally:
            lease.stop()
        if lease.lost.is_set():
            log.warning("run abandoned: lease lost", extra={"request_id": request.id, "worker": worker_id})
            return self.queue.get(request.id)
        return self.finish_run(request, spec, result, worker_id)

    def attempt_dir(self, request: EvalRequest) -> Path:
        """The folder of a claimed request's current attempt."""
        return self.request_dir(request.id) / f"attempt-{request.attempts}"

    def finish_run(
        self, request: EvalRequest, spec: RunSpec, result: RunResult, worker_id: str
    ) -> EvalRequest:
        """Record an ended run, however it was executed (in this process, a scheduler's local child, a Slurm
        job): its scores with the FINISHED transition, or its failure by the retry policy. Raises LeaseLost
        when ``worker_id`` no longer holds the request and the run failed (nothing is recorded then).

        A database outage is waited out (LEADERBOARD_STORE_RETRY_*); DatabaseUnavailable only once the
        attempts are spent. Every write is guarded on the lease and a result is unique per request, so an
        attempt whose commit was lost with the connection is never recorded twice."""
        if result.ok:
            try:
                evaluation = self.build_evaluation(request, spec, result, worker_id)
                judged = self.build_judged(request, spec, result, worker_id)
            except LeaderboardError as exc:
                return self._fail(
                    request, worker_id, f"the results could not be scored: {exc.message}", False, result
                )
            try:
                self._recording(
                    request.id, lambda: self.evaluations.store_and_finish(evaluation, self.clock(), judged)
                )
            except (LeaseLost, AlreadyEvaluated) as exc:  # another worker took over: its result counts
                log.warning("result discarded", extra={"request_id": request.id, "reason": exc.message})
                return self._recording(request.id, lambda: self.queue.get(request.id))
            log.info("request finished", extra={"request_id": request.id, "model": request.model})
            self._publish(request)
            return self._recording(request.id, lambda: self.queue.get(request.id))
        assert result.failure is not None
        return self._fail(request, worker_id, result.failure.reason, result.failure.transient, result)

    def _recording(self, request_id: int, record: Callable[[], T]) -> T:
        """``record()``, attempted again while the database is unavailable, with backoff."""
        backoff = self.store_retry
        for attempt in range(1, backoff.attempts + 1):
            try:
                return record()
            except DatabaseUnavailable as exc:
                if attempt == backoff.attempts:
                    log.error(
                        "the ended run could not be recorded: the database stayed unavailable",
                        extra={"request_id": request_id, "attempts": attempt, "error": exc.message},
                    )
                    raise
                delay = backoff.delay(attempt)
                log.warning(
                    "database unavailable while recording the ended run; retrying",
                    extra={
                        "request_id": request_id,
                        "attempt": attempt,
                        "delay_s": delay,
                        "error": exc.message,
                    },
                )
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _publish(self, request: EvalRequest) -> None:
        if self.publish is None:
            return
        try:
            report = self.publish()
        except LeaderboardError as exc:
            log.warning(
                "publish failed; the result waits in the outbox",
                extra={"request_id": request.id, "error": exc.message},
            )
            return
        log.info("published", extra={"request_id": request.id, "report": str(report)})

    def _fail(
        self, request: EvalRequest, worker_id: str, reason: str, transient: bool, result: RunResult
    ) -> EvalRequest:
        """Record a failed run: the reason for everyone (the errors it quotes may name files by their paths
        on this server: only their names are kept), the log's path and tail apart from it."""
        return self._recording(
            request.id,
            lambda: self.queue.fail(
                request.id,
                worker_id,
                strip_server_paths(reason),
                transient=transient,
                log_path=str(result.log_path),
                log_tail=result.log_tail or None,
            ),
        )

    def build_judged(
        self, request: EvalRequest, spec: RunSpec, result: RunResult, worker_id: str
    ) -> list[Evaluation]:
        """The run's results on the deployment's judged leaderboards (backend.judged.run wrote each one's
        annotations), scored here as `leaderboard judge score` scores them."""
        from backend.leaderboards.config import load_judged
        from backend.services.judged import judged_evaluation

        out: list[Evaluation] = []
        for name, part in (result.outcome.get("judged") or {}).items():
            config = load_judged(name)
            if part.get("skipped"):
                log.info(
                    "not evaluated",
                    extra={"request_id": request.id, "leaderboard": name, "reason": part["skipped"]},
                )
                continue
            glm = part.get("glm_table_file")
            out.append(
                judged_evaluation(
                    config,
                    request.id,
                    Path(part["annotations_file"]),
                    Path(glm) if glm else None,
                    {**self._request_provenance(request, spec), **part.get("provenance", {})},
                    artifacts=str(result.attempt_dir),
                    attempt=request.attempts,
                    worker_id=worker_id,
                    started_at=result.started_at,
                    finished_at=result.finished_at,
                )
            )
        return out

    @staticmethod
    def _request_provenance(request: EvalRequest, spec: RunSpec) -> dict[str, Any]:
        return {
            "model": request.model,
            "model_sha": request.sha,
            "precision": request.precision.value,
            "weight_type": request.weight_type.value,
            "base_model": request.base_model,
            "use_chat_template": request.use_chat_template,
            "limit": spec.limit,
            "command": spec.reproduce_command(),
        }

    def build_evaluation(
        self, request: EvalRequest, spec: RunSpec, result: RunResult, worker_id: str
    ) -> Evaluation:
        from backend.evaluation.materialize import read_materialized
        from backend.leaderboards.config import config_hash, load_config
        from backend.leaderboards.harness_results import read_results_file
        from backend.leaderboards.normalize import normalize, standard_errors

        config = load_config(spec.leaderboard)
        results = read_results_file(Path(result.outcome["results_file"]))
        materialized = read_materialized(Path(spec.output_dir) / "tasks")
        provenance: dict[str, Any] = {
            "leaderboard": config.name,
            "config_hash": config_hash(config),
            "harness": {"package": config.harness.package, "version": results.get("lm_eval_version")},
            "transformers_version": results.get("transformers_version"),
            "task_set": config.task_set,
            "task_hashes": results.get("task_hashes", {}),
            "dataset_revisions": materialized["dataset_revisions"],
            "data_source": materialized["data_source"],
            "seeds": asdict(config.run.seeds),
            **self._request_provenance(request, spec),
            "harness_arguments": result.outcome.get("harness_arguments"),
            "harness_command": result.outcome.get("harness_command"),
            "deviations": result.outcome.get("deviations", {}),
            "judged_skipped": {
                **self.judged_skipped(request, spec),
                **{
                    name: part["skipped"]
                    for name, part in (result.outcome.get("judged") or {}).items()
                    if part.get("skipped")
                },
            },
            "hardware": result.outcome.get("hardware"),
            "total_evaluation_time_seconds": _seconds(results.get("total_evaluation_time_seconds")),
            "samples_files": result.outcome.get("samples_files", []),
            "results_file": result.outcome["results_file"],
        }
        return Evaluation(
            request_id=request.id,
            leaderboard=config.name,
            config_hash=config_hash(config),
            scores=normalize(results, config),
            stderrs=standard_errors(results, config),
            results=results,
            provenance=provenance,
            artifacts=str(result.attempt_dir),
            attempt=request.attempts,
            worker_id=worker_id,
            started_at=result.started_at,
            finished_at=result.finished_at,
            duration_seconds=result.duration_seconds,
        )


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
