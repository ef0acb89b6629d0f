"""The runner: from a claimed request, build the pinned harness call and run it in a child process.

The child (backend.evaluation.child) has its own HF_HOME, temp folder and log file, dies with its parent
(PR_SET_PDEATHSIG) and is killed as a process group on timeout or when the lease is lost. The harness's
request cache lives beside the attempts of a request, so a run that was killed resumes without recomputing
what it had finished.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.domain import EvalRequest, Precision, WeightType
from backend.errors import UnsupportedRun
from backend.evaluation.failures import Failure, classify

if TYPE_CHECKING:
    from backend.leaderboards.config import Seeds

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
#: dtype per precision; quantized precisions load 16-bit activations.
DTYPES = {
    Precision.FLOAT16: "float16",
    Precision.BFLOAT16: "bfloat16",
    Precision.INT8: "float16",
    Precision.INT4: "float16",
    Precision.GPTQ: "float16",
}


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, written to the attempt folder as spec.json (and read by the child)."""

    model: str
    sha: str
    precision: str
    weight_type: str
    base_model: str | None
    use_chat_template: bool
    leaderboard: str
    output_dir: str
    cache_path: str
    request_id: int | None = None
    data_mirror: str | None = None
    model_store: str | None = None
    limit: int | None = None
    device: str = "auto"
    batch_size: str | None = None  # None: the leaderboard config's policy
    max_batch_size: int | None = None
    backend: str = "hf"
    gpus: int = 1  # GPUs the run was given: more than one shards the model (hf) or tensor-parallels (vllm)
    # The judged leaderboards the request is also evaluated on, and how their endpoint judge is reached (its
    # key travels in the environment, never in this file).
    judged: tuple[str, ...] = ()
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_concurrency: int = 4
    judge_price_input_per_1k: float | None = None
    judge_price_output_per_1k: float | None = None
    judge_cache: str | None = None

    @classmethod
    def from_request(cls, request: EvalRequest, **run: Any) -> RunSpec:
        return cls(
            model=request.model,
            sha=request.sha,
            precision=request.precision.value,
            weight_type=request.weight_type.value,
            base_model=request.base_model,
            use_chat_template=request.use_chat_template,
            request_id=request.id,
            **run,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        if isinstance(data.get("judged"), list):
            data["judged"] = tuple(data["judged"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def reproduce_command(self) -> str:
        """The command that runs this evaluation again, anywhere the project is installed."""
        parts = ["leaderboard", "run", self.model, "--revision", self.sha, "--precision", self.precision]
        parts += ["--weight-type", self.weight_type, "--config", self.leaderboard]
        if self.base_model:
            parts += ["--base-model", self.base_model]
        parts.append("--chat-template" if self.use_chat_template else "--no-chat-template")
        if self.limit is not None:
            parts += ["--limit", str(self.limit)]
        for name in self.judged:
            parts += ["--judged", name]
        return " ".join(parts)


def model_arguments(spec: RunSpec, max_length: int | None) -> dict[str, Any]:
    """lm-eval model arguments for a request: precision -> dtype or quantization, adapters through peft on
    the base model, delta weights added to the base; never trust_remote_code."""
    precision = Precision(spec.precision)
    weight_type = WeightType(spec.weight_type)
    if spec.backend == "vllm":
        return _vllm_arguments(spec, precision, weight_type, max_length)
    args: dict[str, Any] = {"dtype": DTYPES[precision], "trust_remote_code": False}
    if weight_type is WeightType.ORIGINAL:
        args.update(pretrained=spec.model, revision=spec.sha)
    elif weight_type is WeightType.ADAPTER:
        args.update(pretrained=spec.base_model, peft=spec.model)
    else:
        args.update(pretrained=spec.base_model, delta=spec.model)
    # The reference's model arguments for bitsandbytes (quantization.QuantizedHFLM reads them as transformers 4
    # did); GPTQ repositories declare their quantization in config.json, which transformers reads itself.
    if precision is Precision.INT8:
        args["load_in_8bit"] = True
    elif precision is Precision.INT4:
        args["load_in_4bit"] = True
    if max_length is not None:
        args["max_length"] = max_length
    if spec.gpus > 1:
        args["parallelize"] = True  # accelerate spreads the layers over every visible GPU
    if spec.device != "auto":
        args["device"] = spec.device
    return args


def _vllm_arguments(
    spec: RunSpec, precision: Precision, weight_type: WeightType, max_length: int | None
) -> dict[str, Any]:
    if weight_type is not WeightType.ORIGINAL or precision in (Precision.INT8, Precision.INT4):
        raise UnsupportedRun(
            f"the vllm backend here evaluates Original weights in float16, bfloat16 or GPTQ, not "
            f"{weight_type} {precision}: set LEADERBOARD_EVAL_BACKEND=hf for this request"
        )
    args: dict[str, Any] = {
        "pretrained": spec.model,
        "revision": spec.sha,
        "dtype": DTYPES[precision],
        "trust_remote_code": False,
        "gpu_memory_utilization": 0.9,
    }
    if precision is Precision.GPTQ:
        args["quantization"] = "gptq"
    if max_length is not None:
        args["max_model_len"] = max_length
    if spec.gpus > 1:
        args["tensor_parallel_size"] = spec.gpus
    return args


def format_model_args(args: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in args.items())


def harness_command(arguments: dict[str, Any], seeds: Seeds) -> str:
    """The bare ``lm_eval`` command line of a run's harness arguments: the reference's command with this
    run's values (the datasets are the Hub's; ``leaderboard run`` reproduces at the pinned revisions)."""
    parts = ["lm_eval", "--model", str(arguments["model"]), "--model_args", str(arguments["model_args"])]
    parts += ["--tasks", ",".join(arguments["tasks"]), "--batch_size", str(arguments["batch_size"])]
    parts += ["--max_batch_size", str(arguments["max_batch_size"])]
    if arguments.get("num_fewshot") is not None:
        parts += ["--num_fewshot", str(arguments["num_fewshot"])]
    if arguments.get("limit") is not None:
        parts += ["--limit", str(arguments["limit"])]
    if arguments.get("apply_chat_template"):
        parts.append("--apply_chat_template")
        if arguments.get("fewshot_as_multiturn"):
            parts.append("--fewshot_as_multiturn")
    if arguments.get("log_samples"):
        parts.append("--log_samples")
    parts += ["--seed", seeds.as_harness_arg(), "--output_path", "results"]
    return shlex.join(parts)


@dataclass(frozen=True)
class RunResult:
    ok: bool
    attempt_dir: Path
    log_path: Path
    started_at: datetime
    finished_at: datetime
    outcome: dict[str, Any] = field(default_factory=dict)  # what the child wrote (results file, samples...)
    failure: Failure | None = None
    log_tail: str = ""

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed worker takes its run with it


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


#: The judge endpoint's key reaches the child in its environment only (never in spec.json nor a log).
JUDGE_KEY_VARIABLE = "LEADERBOARD_JUDGE_API_KEY"


class Runner:
    def __init__(
        self, timeout_seconds: float, shared_hub_cache: Path, judge_api_key: str | None = None
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.shared_hub_cache = shared_hub_cache
        self.judge_api_key = judge_api_key

    def child_environment(self, spec: RunSpec, attempt_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
        home = attempt_dir / "hf-home"
        tmp = attempt_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env.update(
            HF_HOME=str(home),
            HF_DATASETS_CACHE=str(home / "datasets"),
            TMPDIR=str(tmp),
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            HF_HUB_DISABLE_TELEMETRY="1",
        )
        if spec.model_store:
            env.update(HF_HUB_CACHE=spec.model_store, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        else:
            env["HF_HUB_CACHE"] = str(self.shared_hub_cache)
        if spec.data_mirror:
            env.update(HF_DATASETS_OFFLINE="1", NLTK_DATA=str(Path(spec.data_mirror) / "nltk_data"))
        if spec.judged and self.judge_api_key:
            env[JUDGE_KEY_VARIABLE] = self.judge_api_key
        return env

    def launch(
        self, spec: RunSpec, attempt_dir: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the child of one attempt (spec.json and run.log in ``attempt_dir``) and return at once.

        The child leads its own process group and dies with this process."""
        attempt_dir.mkdir(parents=True, exist_ok=True)
        (attempt_dir / "spec.json").write_text(spec.to_json())
        log_path = attempt_dir / "run.log"
        env = self.child_environment(spec, attempt_dir)
        env.update(extra_env or {})
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "backend.evaluation.child", str(attempt_dir / "spec.json")],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=attempt_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        log.info("run started", extra={"model": spec.model, "pid": process.pid, "log": str(log_path)})
        return process

    def run(
        self, spec: RunSpec, attempt_dir: Path, keep_going: Callable[[], bool] = lambda: True
    ) -> RunResult:
        """Run one attempt to the end: success, failure, timeout, or ``keep_going()`` turning False."""
        started = datetime.now(UTC)
        deadline = time.monotonic() + self.timeout_seconds
        timed_out = stopped = False
        process = self.launch(spec, attempt_dir)
        try:
            while True:
                try:
                    returncode = process.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() > deadline:
                    timed_out = True
                elif not keep_going():
                    stopped = True
                else:
                    continue
                os.killpg(process.pid, signal.SIGKILL)
                returncode = process.wait()
                break
        finally:  # interrupted (Ctrl-C, SIGTERM): never leave the run behind
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if stopped:
            failure = Failure("the worker lost its lease on the request; the run was stopped", transient=True)
            return self.result(attempt_dir, returncode, started, datetime.now(UTC), failure=failure)
        return self.result(attempt_dir, returncode, started, datetime.now(UTC), timed_out=timed_out)

    def result(
        self,
        attempt_dir: Path,
        returncode: int | None,
        started: datetime,
        finished: datetime,
        *,
        timed_out: bool = False,
        failure: Failure | None = None,
    ) -> RunResult:
        """What an ended attempt left in its folder (outcome.json or error.json, run.log), however it was
        run: a local child, or a cluster job. ``failure``, when given, is why it ended (it was stopped)."""
        log_path = attempt_dir / "run.log"
        outcome_path = attempt_dir / "outcome.json"
        log_tail = tail(log_path)
        if failure is None and returncode == 0 and outcome_path.is_file():
            return RunResult(
                True, attempt_dir, log_path, started, finished, json.loads(outcome_path.read_text())
            )
        if failure is None:
            error: dict[str, Any] = {}
            if (attempt_dir / "error.json").is_file():
                error = json.loads((attempt_dir / "error.json").read_text())
            failure = classify(
                returncode=returncode,
                timed_out=timed_out,
                error_type=error.get("type"),
                error_message=error.get("message"),
                log_tail=log_tail,
                timeout_seconds=self.timeout_seconds,
            )
        return RunResult(False, attempt_dir, log_path, started, finished, failure=failure, log_tail=log_tail)
