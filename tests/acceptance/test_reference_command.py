"""Our run equals the reference's own command on the same model and data: every prompt, every response,
every metric of the 39 subtasks.

The reference ran `lm_eval --model hf --model_args pretrained=...,revision=...,dtype=... --tasks leaderboard
--batch_size auto --apply_chat_template --fewshot_as_multiturn --log_samples`. Here that command runs bare (the
harness's own CLI, unmodified task files, the datasets read by Hub id from an Arrow cache of our data mirror)
beside `leaderboard run` of the same model over the same mirror. GPQA is the sharp edge: it shuffles its
answer options with Python's global random state, which every task loaded before it consumes, so a run that
loads the benchmarks in another order asks other questions.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from backend.evaluation.synthetic import synthesize
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from tests import reference
from tests.commands import clean_env, leaderboard

pytestmark = pytest.mark.slow
MODEL = "acme/tiny-chat"
LIMIT = "2"
BATCH = "8"  # the same on both sides: auto would probe the machine, and padding changes float sums


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reference")
    store = LocalModelStore(root / "models")
    sha = build_tiny_model(store, MODEL)
    mirror = synthesize(root / "mirror", rows=4)

    bare_args = [
        "--model", "hf",
        "--model_args", f"pretrained={MODEL},revision={sha},dtype=float32",
        "--tasks", "leaderboard",
        "--batch_size", BATCH,
        "--apply_chat_template", "--fewshot_as_multiturn", "--log_samples",
        "--limit", LIMIT, "--device", "cpu",
        "--output_path", str(root / "bare" / "out"),
    ]  # fmt: skip
    cache = reference.datasets_cache(mirror, root / "datasets-cache")
    bare = reference.run_bare(
        bare_args,
        reference.bare_environment(store.root, cache, mirror, root / "bare" / "hf-home"),
        root / "bare",
    )
    assert bare.returncode == 0, bare.stderr[-3000:]

    env = clean_env(
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_DATA_MIRROR=str(mirror),
        LEADERBOARD_WORK_DIR=str(root / "work"),
        LEADERBOARD_EVAL_BATCH_SIZE=BATCH,
        LEADERBOARD_EVAL_DEVICE="cpu",
    )
    ours = leaderboard(
        env, "run", MODEL, "--revision", sha, "--precision", "float16", "--chat-template",
        "--limit", LIMIT, "--out", str(root / "ours"),
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr[-3000:]
    outcome = json.loads((root / "ours" / "attempt" / "outcome.json").read_text())
    return {
        "sha": sha,
        "bare_args": bare_args,
        "bare": reference.samples(root / "bare" / "out"),
        "ours": reference.samples(root / "ours" / "attempt" / "harness"),
        "bare_results": reference.results(root / "bare" / "out"),
        "our_results": reference.results(root / "ours" / "attempt" / "harness"),
        "outcome": outcome,
    }


def _metric_values(sample: dict[str, Any]) -> dict[str, Any]:
    return {name: sample[name] for name in sample["metrics"]}


def test_every_prompt_response_and_metric_equals_the_bare_reference_command(runs):
    bare, ours = runs["bare"], runs["ours"]
    assert len(bare) == 39 and set(ours) == set(bare)
    differences = []
    for task in sorted(bare):
        assert set(ours[task]) == set(bare[task]), task
        for doc_id, expected in bare[task].items():
            got = ours[task][doc_id]
            for key in (
                "arguments",
                "target",
                "resps",
                "filtered_resps",
                "doc_hash",
                "prompt_hash",
                "target_hash",
            ):
                if got[key] != expected[key]:
                    differences.append(f"{task} doc {doc_id}: {key}")
            if got["metrics"] != expected["metrics"] or _metric_values(got) != _metric_values(expected):
                differences.append(f"{task} doc {doc_id}: metrics")
    assert not differences, differences


def test_gpqa_asks_the_reference_s_questions(runs):
    """GPQA's options, as the reference shuffled them, for every document of its three subtasks."""
    for task in ("leaderboard_gpqa_diamond", "leaderboard_gpqa_extended", "leaderboard_gpqa_main"):
        for doc_id, expected in runs["bare"][task].items():
            got = runs["ours"][task][doc_id]
            assert [got["doc"][f"choice{i}"] for i in range(1, 5)] == [
                expected["doc"][f"choice{i}"] for i in range(1, 5)
            ], (task, doc_id)
            assert got["target"] == expected["target"]


def test_every_aggregated_metric_equals_the_reference_s(runs):
    expected, got = runs["bare_results"]["results"], runs["our_results"]["results"]
    assert "leaderboard" in got  # the reference's own group, aggregated as the harness does
    assert set(got) == set(expected)
    for task, entry in expected.items():
        metrics = {k: v for k, v in entry.items() if "," in k}
        assert {k: got[task][k] for k in metrics} == metrics, task


def test_the_recorded_command_is_the_reference_s_with_no_deviation_but_the_batch_size(runs):
    """No context cap, the reference's tasks and seeds; the one deviation (a fixed batch size) is named."""
    outcome, sha = runs["outcome"], runs["sha"]
    arguments = outcome["harness_arguments"]
    assert arguments["tasks"] == ["leaderboard"]
    model_args = dict(item.split("=", 1) for item in arguments["model_args"].split(","))
    assert model_args == {
        "pretrained": MODEL,
        "revision": sha,
        "dtype": "float32",  # float16 computed in float32 on a CPU
        "trust_remote_code": "False",  # the harness's default, stated
        "device": "cpu",
    }
    assert outcome["deviations"] == {"batch_size": BATCH}
    command = shlex.split(outcome["harness_command"])
    assert command[:2] == ["lm_eval", "--model"]
    reference_flags = [a for a in runs["bare_args"] if a.startswith("--") and a not in ("--device",)]
    assert set(reference_flags) <= set(command)
    assert command[command.index("--tasks") + 1] == "leaderboard"
    assert command[command.index("--seed") + 1] == "0,1234,1234,1234"  # lm-eval's default, the reference's


def test_a_context_cap_is_a_named_deviation_recorded_with_the_run(tmp_path: Path):
    """The cap is off by default (the reference passes none); a config that sets one runs with it and
    records it."""
    from backend.evaluation.tasks import project_root

    config = (project_root() / "leaderboard_configs" / "open_llm_v2.yaml").read_text(encoding="utf-8")
    assert "max_length: null" in config
    capped = tmp_path / "capped.yaml"
    capped.write_text(config.replace("max_length: null", "max_length: 2048"), encoding="utf-8")
    store = LocalModelStore(tmp_path / "models")
    sha = build_tiny_model(store, MODEL)
    mirror = synthesize(tmp_path / "mirror", rows=1)
    env = clean_env(
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_DATA_MIRROR=str(mirror),
        LEADERBOARD_WORK_DIR=str(tmp_path / "work"),
        LEADERBOARD_EVAL_DEVICE="cpu",
        LEADERBOARD_EVAL_BATCH_SIZE="8",
    )
    result = leaderboard(
        env,
        "run",
        MODEL,
        "--revision",
        sha,
        "--config",
        str(capped),
        "--limit",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads((tmp_path / "run" / "attempt" / "outcome.json").read_text())
    assert "max_length=2048" in outcome["harness_arguments"]["model_args"].split(",")
    assert outcome["deviations"] == {"max_length": 2048, "batch_size": "8"}
