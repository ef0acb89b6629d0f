"""The evaluation child process: `python -m backend.evaluation.child SPEC.json`.

Runs lm-eval's simple_evaluate on the pinned tasks with the request's settings, writes the harness's own
aggregated results and per-sample files, then outcome.json (or error.json) beside the spec. Everything it
prints goes to the attempt's log.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import traceback
from pathlib import Path
from typing import Any

from backend.evaluation.runner import RunSpec, format_model_args, model_arguments
from backend.evaluation.tasks import TaskSet
from backend.leaderboards.config import LeaderboardConfig, LeaderboardConfigError

SEQUENCE_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _context_length(spec: RunSpec, model_args: dict[str, Any], cap: int | None) -> int | None:
    """min(model max, cap): the reference capped contexts at 4096."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        model_args["pretrained"], revision=model_args.get("revision"), trust_remote_code=False
    )
    sources = [config, getattr(config, "text_config", None)]
    lengths = [
        getattr(c, key)
        for c in sources
        if c is not None
        for key in SEQUENCE_LENGTH_KEYS
        if getattr(c, key, None)
    ]
    model_max = min(int(v) for v in lengths) if lengths else None
    if cap is None:
        return model_max
    return min(model_max, cap) if model_max else cap


def _hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["gpus"] = []
        info["cpu"] = platform.processor() or platform.machine()
    return info


def check_config_matches_task_set(config: LeaderboardConfig, task_set: TaskSet) -> None:
    """The leaderboard config scores what the task set runs: the same groups and the same subtasks."""
    run = set(task_set.run_names)
    scored = {s.task for b in config.benchmarks for s in b.subtasks} | {
        b.task for b in config.benchmarks if not b.subtasks
    }
    defined = {s.name for s in task_set.subtasks}  # a plain task is its own only subtask
    problems = [
        f"{t} is run by the config but not defined by the task set"
        for t in config.harness_tasks
        if t not in run
    ]
    problems += [f"{t} is scored by the config but not in the task set" for t in sorted(scored - defined)]
    problems += [f"{t} is in the task set but not scored by the config" for t in sorted(defined - scored)]
    if problems:
        raise LeaderboardConfigError(
            f"{config.source or config.name} and task set {task_set.name} disagree: " + "; ".join(problems)
        )


def evaluate(spec: RunSpec) -> dict[str, Any]:
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from backend.evaluation.tasks import hub_configs, load_task_set, materialize
    from backend.leaderboards.config import load_config

    config = load_config(spec.leaderboard)
    task_set = load_task_set(config.task_set)
    check_config_matches_task_set(config, task_set)
    out = Path(spec.output_dir)
    mirror = Path(spec.data_mirror) if spec.data_mirror else None
    tasks_dir = materialize(task_set, out / "tasks", mirror)
    run = config.run
    if spec.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError(
                "LEADERBOARD_EVAL_BACKEND=vllm, but vllm is not installed: pip install '.[vllm]'"
            )
    model_args = model_arguments(spec, None)
    model_args = model_arguments(spec, _context_length(spec, model_args, run.max_length))
    if spec.device == "auto" and spec.backend == "hf":
        import torch

        model_args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if model_args.get("device") == "cpu" and model_args.get("dtype") in ("float16", "bfloat16"):
        # Half-precision matmuls are emulated on CPUs (minutes instead of seconds); compute in float32 and
        # record it: the dtype used is part of the harness arguments stored with the result.
        model_args["dtype"] = "float32"
    batch_policy = spec.batch_size or run.batch_size
    batch_size: int | str = int(batch_policy) if batch_policy.isdigit() else batch_policy
    use_chat_template = run.use_chat_template(spec.use_chat_template)
    tracker = EvaluationTracker(output_path=str(out / "harness"))
    arguments: dict[str, Any] = {
        "model": spec.backend,
        "model_args": format_model_args(model_args),
        "tasks": list(config.harness_tasks),
        "batch_size": batch_size,
        "max_batch_size": spec.max_batch_size or run.max_batch_size,
        "num_fewshot": run.num_fewshot,
        "use_cache": spec.cache_path,
        "limit": spec.limit,
        "log_samples": run.log_samples,
        "apply_chat_template": use_chat_template,
        "fewshot_as_multiturn": use_chat_template and run.fewshot_as_multiturn,
        "random_seed": run.seeds.random,
        "numpy_random_seed": run.seeds.numpy,
        "torch_random_seed": run.seeds.torch,
        "fewshot_random_seed": run.seeds.fewshot,
    }
    print(f"harness arguments: {json.dumps(arguments)}", flush=True)
    results = lm_eval.simple_evaluate(
        **arguments,
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        evaluation_tracker=tracker,
    )
    if results is None:
        raise RuntimeError("the harness returned no results (not the main process?)")
    samples = results.pop("samples", {})
    # Record the configs as a Hub run at the same revisions would: nothing depends on where the mirror lies.
    results["configs"] = hub_configs(results["configs"], tasks_dir)
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in samples:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    results_files = sorted((out / "harness").rglob("results_*.json"))
    return {
        "results_file": str(results_files[-1]),
        "samples_files": sorted(str(p) for p in (out / "harness").rglob("samples_*.jsonl")),
        "harness_arguments": arguments,
        "hardware": _hardware(),
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec_path = Path(argv[1])
    attempt = spec_path.parent
    try:
        outcome = evaluate(RunSpec.from_json(spec_path.read_text()))
    except BaseException as exc:  # everything goes to error.json: the parent classifies it
        traceback.print_exc()
        (attempt / "error.json").write_text(
            json.dumps(
                {"type": type(exc).__name__, "message": str(exc)[:5000], "traceback": traceback.format_exc()}
            )
        )
        return 1
    (attempt / "outcome.json").write_text(json.dumps(outcome, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
