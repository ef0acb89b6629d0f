"""Harness overhead: the worker's whole path against a bare ``lm_eval.simple_evaluate`` on identical work.

The full path is ``EvaluationService.work_once``: claim -> runner child process (materialized task files,
request cache, results and samples saved) -> parse -> normalize -> store with the FINISHED transition. The
baseline is a fresh process that imports lm-eval and calls ``simple_evaluate`` with the exact harness
arguments the worker's child recorded (same tiny model, same synthesized data, same limit, same batch size,
same environment), without the request cache. Both are timed from process start to the end, alternately
(full, bare / bare, full ...) after one untimed warm-up, so drift hits both alike; the ratio is per pair.
The target is read on CPU time (user + system of every process of a run), which other work on a shared
machine does not inflate; the wall-time ratio is reported beside it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backend.app import App
from backend.domain import ModelType, Precision, Status, WeightType
from backend.evaluation.runner import RunSpec
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.requests import NewRequest
from bench.stats import spread, target

SIZES: dict[str, dict[str, int]] = {
    "full": {"limit": 1, "repetitions": 5, "rows": 8, "warmup": 1},
    "tiny": {"limit": 1, "repetitions": 1, "rows": 6, "warmup": 0},
}
TARGET_RATIO = 1.02
BATCH_SIZE = "8"  # as the demo: auto-detection costs more than it saves on a tiny model, for both paths


def _request(model: str, sha: str) -> NewRequest:
    return NewRequest(
        model=model,
        revision="main",
        sha=sha,
        precision=Precision.BFLOAT16,
        weight_type=WeightType.ORIGINAL,
        model_type=ModelType.PRETRAINED,
        base_model=None,
        use_chat_template=False,
        params_b=0.000336,
        architectures=("LlamaForCausalLM",),
        license="apache-2.0",
        sender="bench",
    )


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have exited."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _full(app: App) -> tuple[float, float, Path]:
    """One worker iteration: (wall seconds, CPU seconds, the attempt folder it ran in)."""
    cpu, started = _cpu_seconds(), time.perf_counter()
    done = app.worker.work_once("bench-worker")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    if done is None or done.status is not Status.FINISHED:
        reason = done.failure_reason if done else "nothing to claim"
        raise RuntimeError(f"the worker did not finish its request: {reason}")
    return seconds, cpu, app.worker.request_dir(done.id) / f"attempt-{done.attempts}"


def _bare(app: App, reference: Path, folder: Path) -> tuple[float, float, float]:
    """The bare harness call in a fresh process with the worker child's environment; (wall, CPU,
    simple_evaluate's own wall) seconds."""
    folder.mkdir(parents=True)
    outcome = json.loads((reference / "outcome.json").read_text())
    arguments = {**outcome["harness_arguments"], "use_cache": None}
    spec_path = folder / "bare-spec.json"
    spec_path.write_text(json.dumps({"arguments": arguments, "tasks_dir": str(reference / "tasks")}))
    run_spec = RunSpec.from_json((reference / "spec.json").read_text())
    env = app.worker.runner.child_environment(run_spec, folder)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root)
    cpu, started = _cpu_seconds(), time.perf_counter()
    with (folder / "run.log").open("wb") as log:
        code = subprocess.call(
            [sys.executable, "-m", "bench.bare", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    if code != 0:
        raise RuntimeError(f"the bare harness run failed (exit {code}): see {folder / 'run.log'}")
    inner = json.loads((folder / "bare.json").read_text())["simple_evaluate_seconds"]
    return seconds, cpu, float(inner)


def run(size: str, root: Path) -> dict[str, Any]:
    from backend.evaluation.synthetic import synthesize
    from backend.leaderboards.config import load_config

    params = SIZES[size]
    repetitions = params["repetitions"]
    # Both paths compute on one thread (their environments are copies of this one): CPU time then counts
    # work, not idle OpenMP threads spinning while other processes hold the cores of a shared machine.
    os.environ["OMP_NUM_THREADS"] = "1"
    store = LocalModelStore(root / "models")
    mirror = synthesize(root / "mirror", rows=params["rows"])
    settings = Settings(
        database_url=f"sqlite:///{root / 'leaderboard.db'}",
        model_store=store.root,
        data_mirror=mirror,
        work_dir=root / "work",
        eval_limit=params["limit"],
        eval_device="cpu",
        eval_batch_size=BATCH_SIZE,
    )
    app = App.open(settings)
    try:
        for index in range(repetitions + params["warmup"]):
            model = f"bench/tiny-{index}"
            sha = build_tiny_model(store, model, seed=0)  # identical weights for every run
            app.requests.create(_request(model, sha), app.clock(), None)
        full: list[float] = []
        full_cpu: list[float] = []
        bare: list[float] = []
        bare_cpu: list[float] = []
        inner: list[float] = []
        # The bare runs take their arguments and task files from the first full run: an untimed warm-up,
        # or (tiny size) the first timed one.
        reference: Path | None = _full(app)[2] if params["warmup"] else None
        for index in range(repetitions):
            order = ("full", "bare") if index % 2 == 0 else ("bare", "full")
            for kind in order:
                if kind == "full":
                    seconds, cpu, attempt = _full(app)
                    full.append(seconds)
                    full_cpu.append(cpu)
                    reference = reference or attempt
                else:
                    assert reference is not None
                    seconds, cpu, call = _bare(app, reference, root / f"bare-{index}")
                    bare.append(seconds)
                    bare_cpu.append(cpu)
                    inner.append(call)
    finally:
        app.close()
    ratios = [f / b for f, b in zip(full, bare, strict=True)]
    cpu_ratios = [f / b for f, b in zip(full_cpu, bare_cpu, strict=True)]
    overheads = [f - b for f, b in zip(full_cpu, bare_cpu, strict=True)]
    median_overhead = spread(overheads)["median"]
    config = load_config(settings.config)
    return {
        "what": "worker path (claim -> child -> parse -> normalize -> store) vs bare simple_evaluate "
        "in a fresh process, alternated",
        "model": "tiny Llama (336k parameters, random init), float32 on CPU",
        "tasks": list(config.tasks.run_names),
        "subtasks": len(config.tasks.subtasks),
        "limit": params["limit"],
        "batch_size": BATCH_SIZE,
        "threads": 1,
        "repetitions": repetitions,
        "warmup_runs": params["warmup"],
        # CPU time (user + system, every process of the run) is what the target is read on: on a machine
        # shared with other work, wall time also counts their load, and its ratio is shown beside it.
        "full_path_cpu_seconds": {**spread(full_cpu), "values": full_cpu},
        "bare_cpu_seconds": {**spread(bare_cpu), "values": bare_cpu},
        "ratio_cpu": {**spread(cpu_ratios), "values": cpu_ratios},
        "full_path_seconds": {**spread(full), "values": full},
        "bare_seconds": {**spread(bare), "values": bare},
        "bare_simple_evaluate_seconds": spread(inner),
        "ratio": {**spread(ratios), "values": ratios},
        "overhead_cpu_seconds": spread(overheads),
        # A fixed overhead of this size is 2% of a bare run this long: where the target is met.
        "ratio_target_met_from_bare_seconds": max(median_overhead, 0.0) / (TARGET_RATIO - 1),
        "target_ratio": target(spread(cpu_ratios)["median"], TARGET_RATIO),
    }
