"""GPU throughput: the six-benchmark suite on a randomly initialised ~1B-parameter Llama, with the project's
runner, our hf settings against the harness defaults, side by side. Skipped, with a line saying so, where
torch sees no GPU.

Tokens processed are counted from the run's own per-sample records (prompt and continuation of every
log-likelihood request, prompt and generated text of every generation), with the model's tokenizer. The
compute bound is tokens x 2 x parameters / the GPU's peak dense bf16 FLOP/s; the ratio is that bound over
the GPU-seconds the run took (1.0 would be every FLOP at peak).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backend.evaluation.runner import Runner, RunSpec
from backend.hub.local_store import LocalModelStore

#: Peak dense bf16 FLOP/s by device name fragment (vendor data sheets, without sparsity); first match wins.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756.5e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),  # SXM5 (H100 80GB HBM3)
    ("A100", 312.0e12),
    ("L40S", 362.1e12),
)
#: Llama-3.2-1B's shape with the local tokenizer's vocabulary: about 0.98B parameters.
ONE_B_SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "max_position_embeddings": 4096,
    "initializer_range": 0.02,
    "dtype": "bfloat16",
    "torch_dtype": "bfloat16",
}
SIZES = {"full": {"limit": 2}, "tiny": {"limit": 1}}
REPO = "bench/llama-1b-random"


def peak_flops(device_name: str) -> float | None:
    for fragment, flops in PEAK_BF16_FLOPS:
        if fragment.lower() in device_name.lower():
            return flops
    return None


def compute_bound_ratio(tokens: int, parameters: int, gpu_seconds: float, peak: float) -> float:
    """The share of the GPU's peak the run achieved: (tokens x 2 x parameters / peak) / GPU-seconds."""
    return tokens * 2 * parameters / peak / gpu_seconds


def count_tokens(samples_files: list[Path], tokenizer: Any) -> int:
    """Tokens the model processed, from lm-eval's per-sample records."""
    total = 0
    for path in samples_files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            sample = json.loads(line)
            for args in (sample.get("arguments") or {}).values():
                prompt, second = args.get("arg_0"), args.get("arg_1")
                total += len(tokenizer(str(prompt))["input_ids"])
                if isinstance(second, str):  # a continuation; generation kwargs are a dict
                    total += len(tokenizer(second, add_special_tokens=False)["input_ids"])
            if sample.get("arguments") and isinstance(
                next(iter(sample["arguments"].values())).get("arg_1"), dict
            ):
                for response in sample.get("resps") or []:
                    for text in response if isinstance(response, list) else [response]:
                        total += len(tokenizer(str(text), add_special_tokens=False)["input_ids"])
    return total


def build_model(store: LocalModelStore, scratch: Path) -> tuple[str, int]:
    """A ~1B Llama with random weights (no download) in the local store; (sha, parameters)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.modelbuilder import build_tokenizer, llama_config

    scratch.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(scratch, chat_template=True)
    config = {**llama_config(vocab), **ONE_B_SHAPE}
    with torch.device("cuda"):
        model: Any = LlamaForCausalLM(LlamaConfig(**config))
        model = model.to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(scratch, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    return store.add_snapshot(REPO, scratch), parameters


def _ours(runner: Runner, spec: RunSpec) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = runner.run(spec, Path(spec.output_dir))
    seconds = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"the GPU run failed: {result.failure}\n{result.log_tail}")
    return seconds, result.outcome


def _defaults(
    runner: Runner, spec: RunSpec, ours: dict[str, Any], folder: Path
) -> tuple[float, dict[str, Any]]:
    """The same tasks and limit through bare simple_evaluate with the harness's own defaults for what we set
    (batch size 1, dtype auto, no max batch size); samples logged as ours are."""
    folder.mkdir(parents=True)
    model_args = f"pretrained={spec.model},revision={spec.sha},device=cuda"
    arguments = {
        **ours["harness_arguments"],
        "model_args": model_args,
        "batch_size": 1,
        "max_batch_size": None,
        "use_cache": None,
    }
    tasks_dir = Path(ours["results_file"]).parents[2] / "tasks"
    (folder / "bare-spec.json").write_text(json.dumps({"arguments": arguments, "tasks_dir": str(tasks_dir)}))
    env = runner.child_environment(spec, folder)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    started = time.perf_counter()
    with (folder / "run.log").open("wb") as log:
        code = subprocess.call(
            [sys.executable, "-m", "bench.bare", str(folder / "bare-spec.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
    if code != 0:
        raise RuntimeError(f"the harness-defaults GPU run failed: see {folder / 'run.log'}")
    return time.perf_counter() - started, arguments


def run(size: str, root: Path) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": f"no GPU: torch {torch.__version__} sees no CUDA device"}
    from transformers import AutoTokenizer

    from backend.evaluation.synthetic import synthesize

    limit = SIZES[size]["limit"]
    device = torch.cuda.get_device_name(0)
    peak = peak_flops(device)
    store = LocalModelStore(root / "models")
    sha, parameters = build_model(store, root / "scratch")
    mirror = synthesize(root / "mirror", rows=max(8, limit + 5))
    runner = Runner(6 * 3600, root / "hub-cache")
    spec = RunSpec(
        model=REPO, sha=sha, precision="bfloat16", weight_type="Original", base_model=None,
        use_chat_template=False, leaderboard="open_llm_v2", output_dir=str(root / "ours"),
        cache_path=str(root / "ours-cache" / "lm-cache"), data_mirror=str(mirror),
        model_store=str(store.root), limit=limit, device="cuda",
    )  # fmt: skip
    (root / "ours-cache").mkdir(parents=True)
    ours_seconds, outcome = _ours(runner, spec)
    defaults_seconds, default_arguments = _defaults(runner, spec, outcome, root / "defaults")
    tokenizer = AutoTokenizer.from_pretrained(str(root / "scratch"))
    tokens = count_tokens([Path(p) for p in outcome["samples_files"]], tokenizer)

    def figures(seconds: float, arguments: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_args": arguments["model_args"],
            "batch_size": arguments["batch_size"],
            "max_batch_size": arguments.get("max_batch_size"),
            "gpu_seconds": seconds,
            "tokens_per_second": tokens / seconds,
        }
        if peak is not None:
            out["compute_bound_ratio"] = compute_bound_ratio(tokens, parameters, seconds, peak)
        return out

    return {
        "device": device,
        "peak_bf16_flops": peak,
        "parameters": parameters,
        "architecture": "LlamaForCausalLM (Llama-3.2-1B shape, local tokenizer), random init",
        "limit": limit,
        "tokens": tokens,
        "compute_bound_seconds": tokens * 2 * parameters / peak if peak else None,
        "ours": figures(ours_seconds, outcome["harness_arguments"]),
        "harness_defaults": figures(defaults_seconds, default_arguments),
        "speedup_ours_over_defaults": defaults_seconds / ours_seconds,
        "note": "GPU-seconds are the wall time of each run as a process (model load included), one GPU",
    }
