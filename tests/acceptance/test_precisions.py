"""Every precision the submission form offers runs through the runner as far as this machine allows.

float16 and bfloat16 are computed in float32 on a CPU (half precision is emulated there) and say so in the
recorded arguments; 8bit and 4bit load through bitsandbytes, whose CPU backend quantizes the weights here;
GPTQ needs optimum and gptqmodel, which this machine may lack: the run then fails before loading anything,
saying what to install (the GPU bench, bench/gpu.py, exercises it where they are installed).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from backend.evaluation.synthetic import synthesize
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from tests import reference
from tests.commands import clean_env, leaderboard

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).parents[1] / "fixtures" / "leaderboards" / "gpqa_diamond.yaml"
TASK = "leaderboard_gpqa_diamond"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("precisions")
    store = LocalModelStore(root / "models")
    full = build_tiny_model(store, "acme/tiny")
    gptq = build_tiny_model(store, "acme/tiny-gptq", gptq_bits=4)
    mirror = synthesize(root / "mirror", rows=4)
    return {
        "root": root,
        "store": store,
        "mirror": mirror,
        "sha": {"acme/tiny": full, "acme/tiny-gptq": gptq},
    }


def _run(setup: dict[str, Any], model: str, precision: str) -> tuple[Any, Path]:
    out = setup["root"] / f"run-{precision}"
    env = clean_env(
        LEADERBOARD_MODEL_STORE=str(setup["store"].root),
        LEADERBOARD_DATA_MIRROR=str(setup["mirror"]),
        LEADERBOARD_WORK_DIR=str(setup["root"] / "work"),
        LEADERBOARD_EVAL_DEVICE="cpu",
        LEADERBOARD_EVAL_BATCH_SIZE="4",
    )
    result = leaderboard(
        env, "run", model, "--revision", setup["sha"][model], "--precision", precision,
        "--config", str(CONFIG), "--limit", "3", "--out", str(out),
    )  # fmt: skip
    return result, out / "attempt"


def _loglikelihoods(attempt: Path) -> list[float]:
    records = reference.samples(attempt / "harness")[TASK]
    return [float(pair[0]) for doc in sorted(records) for pair in records[doc]["filtered_resps"]]


@pytest.fixture(scope="module")
def float_run(setup: dict[str, Any]) -> Path:
    result, attempt = _run(setup, "acme/tiny", "float16")
    assert result.returncode == 0, result.stderr[-3000:]
    return attempt


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_16_bit_precisions_run_in_float32_on_a_cpu_and_say_so(setup, float_run, precision):
    attempt = float_run if precision == "float16" else _run(setup, "acme/tiny", precision)[1]
    outcome = json.loads((attempt / "outcome.json").read_text())
    assert "dtype=float32" in outcome["harness_arguments"]["model_args"].split(",")
    values = _loglikelihoods(attempt)
    assert len(values) == 3 * 4 and all(math.isfinite(v) for v in values)


@pytest.mark.parametrize(
    ("precision", "flag"), [("8bit", "load_in_8bit=True"), ("4bit", "load_in_4bit=True")]
)
def test_bitsandbytes_precisions_load_quantized_weights(setup, float_run, precision, flag):
    """The reference's model arguments, read as transformers 4 read them (a BitsAndBytesConfig): the run
    completes and its log-likelihoods are those of quantized weights, not of the float ones."""
    result, attempt = _run(setup, "acme/tiny", precision)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads((attempt / "outcome.json").read_text())
    assert flag in outcome["harness_arguments"]["model_args"].split(",")
    quantized, full = _loglikelihoods(attempt), _loglikelihoods(float_run)
    assert len(quantized) == len(full) and all(math.isfinite(v) for v in quantized)
    assert quantized != full  # quantization moved the numbers
    assert max(abs(q - f) for q, f in zip(quantized, full, strict=True)) < 0.5 * max(abs(f) for f in full)


def test_gptq_runs_where_its_libraries_are_installed_and_says_what_to_install_where_not(setup):
    result, attempt = _run(setup, "acme/tiny-gptq", "GPTQ")
    available = all(importlib.util.find_spec(name) is not None for name in ("optimum", "gptqmodel"))
    if available:
        assert result.returncode == 0, result.stderr[-3000:]
        assert all(math.isfinite(v) for v in _loglikelihoods(attempt))
    else:  # this machine: the run is refused before any model is loaded, with the fix
        assert result.returncode == 1
        assert "GPTQ weights load with optimum, gptqmodel" in result.stderr
        assert "pip install '.[gptq]'" in result.stderr
        assert not (attempt / "harness").exists()
