"""Failure classification (the retry policy) and the harness call built from a request."""

from __future__ import annotations

import signal

import pytest

from backend.evaluation.failures import classify
from backend.evaluation.runner import RunSpec, format_model_args, model_arguments


def spec(**changes) -> RunSpec:
    fields = {
        "model": "acme/m",
        "sha": "a" * 40,
        "precision": "bfloat16",
        "weight_type": "Original",
        "base_model": None,
        "use_chat_template": True,
        "leaderboard": "open_llm_v2",
        "output_dir": "/tmp/out",
        "cache_path": "/tmp/cache",
    }
    fields.update(changes)
    return RunSpec(**fields)


@pytest.mark.parametrize(
    "error_type, message, transient, start",
    [
        ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", True, "ran out of GPU memory"),
        (
            "SafetensorError",
            "Error while deserializing header: MetadataIncompleteBuffer",
            False,
            "the model weights cannot be read",
        ),
        (
            "RuntimeError",
            "size mismatch for model.layers.0.mlp.up_proj.weight",
            False,
            "the weights do not match",
        ),
        (
            "ValueError",
            "probability tensor contains either `inf`, `nan` or element < 0",
            False,
            "the model produced NaN",
        ),
        ("HfHubHTTPError", "503 Server Error: Service Unavailable", True, "the Hub or the network failed"),
        ("KeyError", "'boom'", False, "the evaluation failed: KeyError: 'boom'"),
    ],
)
def test_errors_are_classified_by_cause(error_type, message, transient, start):
    failure = classify(
        returncode=1, timed_out=False, error_type=error_type, error_message=message, log_tail=""
    )
    assert failure.transient is transient
    assert failure.reason.startswith(start)


def test_a_killed_process_is_transient_and_a_timeout_is_not():
    killed = classify(
        returncode=-signal.SIGKILL, timed_out=False, error_type=None, error_message=None, log_tail=""
    )
    assert killed.transient and "SIGKILL" in killed.reason
    timeout = classify(
        returncode=-9, timed_out=True, error_type=None, error_message=None, log_tail="", timeout_seconds=7200
    )
    assert not timeout.transient and "2 h" in timeout.reason


def test_the_log_tail_is_searched_when_the_child_left_no_error_file():
    tail = "loading...\ntorch.OutOfMemoryError: CUDA out of memory.\n"
    failure = classify(returncode=1, timed_out=False, error_type=None, error_message=None, log_tail=tail)
    assert failure.transient and "torch.OutOfMemoryError: CUDA out of memory." in failure.reason


def test_model_arguments_follow_precision_and_weight_type():
    assert model_arguments(spec(), 4096) == {
        "dtype": "bfloat16",
        "trust_remote_code": False,
        "pretrained": "acme/m",
        "revision": "a" * 40,
        "max_length": 4096,
    }
    assert model_arguments(spec(precision="4bit"), None)["load_in_4bit"] is True
    assert model_arguments(spec(precision="8bit"), None)["load_in_8bit"] is True
    # A GPTQ repository declares its quantization in config.json: the model arguments are the plain ones.
    assert model_arguments(spec(precision="GPTQ"), None) == {
        "dtype": "float16",
        "trust_remote_code": False,
        "pretrained": "acme/m",
        "revision": "a" * 40,
    }
    adapter = model_arguments(spec(weight_type="Adapter", base_model="acme/base"), None)
    assert (adapter["pretrained"], adapter["peft"]) == ("acme/base", "acme/m")
    delta = model_arguments(spec(weight_type="Delta", base_model="acme/base"), None)
    assert (delta["pretrained"], delta["delta"]) == ("acme/base", "acme/m")
    assert model_arguments(spec(device="cuda:1"), None)["device"] == "cuda:1"
    assert format_model_args({"pretrained": "a/b", "dtype": "float16"}) == "pretrained=a/b,dtype=float16"


def test_spec_round_trips_and_names_its_reproduction_command():
    original = spec(limit=5)
    assert RunSpec.from_json(original.to_json()) == original
    assert original.reproduce_command() == (
        f"leaderboard run acme/m --revision {'a' * 40} --precision bfloat16 --weight-type Original "
        "--config open_llm_v2 --chat-template --limit 5"
    )


def test_vllm_arguments_and_what_it_refuses():
    from backend.errors import UnsupportedRun

    args = model_arguments(spec(backend="vllm"), 4096)
    assert args["max_model_len"] == 4096 and args["trust_remote_code"] is False and "max_length" not in args
    assert model_arguments(spec(backend="vllm", precision="GPTQ"), None)["quantization"] == "gptq"
    with pytest.raises(UnsupportedRun, match="LEADERBOARD_EVAL_BACKEND=hf"):
        model_arguments(spec(backend="vllm", weight_type="Adapter", base_model="acme/base"), None)


def test_the_harness_command_is_the_reference_command_with_the_run_s_values():
    from backend.evaluation.runner import harness_command
    from backend.leaderboards.config import Seeds

    arguments = {
        "model": "hf",
        "model_args": "dtype=bfloat16,trust_remote_code=False,pretrained=acme/m,revision=" + "a" * 40,
        "tasks": ["leaderboard"],
        "batch_size": "auto",
        "max_batch_size": 64,
        "num_fewshot": None,
        "limit": None,
        "log_samples": True,
        "apply_chat_template": True,
        "fewshot_as_multiturn": True,
    }
    assert harness_command(arguments, Seeds(0, 1234, 1234, 1234)) == (
        "lm_eval --model hf --model_args dtype=bfloat16,trust_remote_code=False,pretrained=acme/m,revision="
        + "a" * 40
        + " --tasks leaderboard --batch_size auto --max_batch_size 64 --apply_chat_template "
        "--fewshot_as_multiturn --log_samples --seed 0,1234,1234,1234 --output_path results"
    )
    plain = {**arguments, "apply_chat_template": False, "fewshot_as_multiturn": False, "limit": 4}
    assert " --limit 4 " in harness_command(plain, Seeds(1, 2, 3, 4))
    assert "--apply_chat_template" not in harness_command(plain, Seeds(1, 2, 3, 4))
    assert harness_command(plain, Seeds(1, 2, 3, 4)).endswith("--seed 1,2,3,4 --output_path results")


def test_our_own_harness_arguments_in_the_log_do_not_make_a_failure_remote_code():
    """The child prints its arguments (trust_remote_code=False) first; a later error is classified as itself."""
    tail = (
        'harness arguments: {"model": "hf", "model_args": "dtype=float32,trust_remote_code=False,pretrained=a/b"}\n'
        "TypeError: LlamaForCausalLM.__init__() got an unexpected keyword argument 'load_in_8bit'\n"
    )
    failure = classify(
        returncode=1,
        timed_out=False,
        error_type="TypeError",
        error_message="unexpected keyword",
        log_tail=tail,
    )
    assert "custom code" not in failure.reason and "TypeError" in failure.reason
    needs_code = (
        "ValueError: ... Please pass the argument `trust_remote_code=True` to allow custom code to be run."
    )
    assert (
        "custom code"
        in classify(
            returncode=1, timed_out=False, error_type=None, error_message=None, log_tail=needs_code
        ).reason
    )
