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
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.domain import Precision
from backend.evaluation.runner import RunSpec, format_model_args, harness_command, model_arguments
from backend.leaderboards.config import RunSettings


def _context_length(model_args: dict[str, Any], run: RunSettings) -> int | None:
    """The max_length to pass the harness: None (lm-eval reads the model's own, as the reference command
    does) unless the config caps it, then min(model maximum, cap) with the model maximum read as lm-eval
    reads it."""
    if run.max_length is None:
        return None
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        model_args["pretrained"], revision=model_args.get("revision"), trust_remote_code=False
    )
    return run.max_length_for(resolve_max_length(config))


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


def evaluate(spec: RunSpec) -> dict[str, Any]:
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from backend.evaluation.materialize import hub_configs, materialize
    from backend.evaluation.quantization import check_precision_available
    from backend.leaderboards.config import load_config

    config = load_config(spec.leaderboard)
    out = Path(spec.output_dir)
    mirror = Path(spec.data_mirror) if spec.data_mirror else None
    tasks_dir = materialize(config.tasks, out / "tasks", mirror)
    run = config.run
    if spec.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError(
                "LEADERBOARD_EVAL_BACKEND=vllm, but vllm is not installed: pip install '.[vllm]'"
            )
    else:
        check_precision_available(Precision(spec.precision))
    model_args = model_arguments(spec, None)
    model_args = model_arguments(spec, _context_length(model_args, run))
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
        # The reference command's tasks (`--tasks leaderboard`): lm-eval loads them in its order, which
        # decides GPQA's option shuffle. The config's benchmark order is for display only.
        "tasks": list(config.tasks.run_names),
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
    model: Any = spec.backend
    if spec.backend == "hf" and Precision(spec.precision) in (Precision.INT8, Precision.INT4):
        from backend.evaluation.quantization import QuantizedHFLM

        model = QuantizedHFLM.create_from_arg_string(
            arguments["model_args"],
            {"batch_size": batch_size, "max_batch_size": arguments["max_batch_size"]},
        )
    results = lm_eval.simple_evaluate(
        **{**arguments, "model": model},
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
    judged = {name: _judged(spec, name, out) for name in spec.judged}
    return {
        "judged": judged,
        "results_file": str(results_files[-1]),
        "samples_files": sorted(str(p) for p in (out / "harness").rglob("samples_*.jsonl")),
        "harness_arguments": arguments,
        "harness_command": harness_command(arguments, run.seeds),
        # From the settings as run: a deployment's batch size overrides the config's, and differs too.
        "deviations": replace(
            run, batch_size=str(batch_policy), max_batch_size=arguments["max_batch_size"]
        ).deviations(),
        "hardware": _hardware(),
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
    }


def _judged(spec: RunSpec, name: str, out: Path) -> dict[str, Any]:
    """The run on one judged leaderboard (backend.judged.run), after the benchmarks: its files, or why
    the request is not evaluated on it (a model without a chat template)."""
    from backend.errors import NoChatTemplate
    from backend.judged.config import JUDGED_NEEDS_CHAT_TEMPLATE
    from backend.judged.run import run_judged
    from backend.leaderboards.config import load_judged

    config = load_judged(name)
    try:
        return run_judged(spec, config, out / "judged" / config.name)
    except NoChatTemplate:
        return {"skipped": JUDGED_NEEDS_CHAT_TEMPLATE}


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
