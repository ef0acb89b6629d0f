"""The judged generation over real tiny models in a local model store, loaded by repo id and commit as the
harness run loads them: batches equal one-at-a-time outputs and the serving endpoint's own decoding loop,
stop sequences and end-of-turn tokens end outputs, a model without a chat template is refused, and a killed
generation resumes without generating again what it had finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import backend
from backend.errors import ModelOutputsInvalid, NoChatTemplate
from backend.evaluation.runner import RunSpec
from backend.hub.local_store import LocalModelStore
from backend.judged.generate import GenerationSettings, generate_outputs
from backend.judged.outputs import GeneratedOutput, Instruction, write_model_outputs
from backend.modelbuilder import build_tiny_model
from backend.serving.generation import Sampling, generate
from backend.serving.models import load_model
from tests.alpaca_eval_reference import import_alpaca_eval
from tests.serving import build_store, reference

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 32
WORDS = ("rain", "books", "water", "a train", "coffee", "the museum", "farmers")
#: Of different lengths, so that batches pad.
INSTRUCTIONS = [
    Instruction(f"Write about {word}." + " Explain your reasoning." * i, "helpful_base")
    for i, word in enumerate(WORDS)
]
SETTINGS = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=4)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    """The serving tests' store (good/tiny, good/no-template, bad/adapter...) and a copy of good/tiny whose
    generation config ends turns on a token good/tiny writes early in its answer to the first instruction."""
    store = build_store(tmp_path_factory.mktemp("generate-store"))
    tokens = reference(store, "good/tiny", [_user(INSTRUCTIONS[0])], MAX_NEW_TOKENS).tokens
    position = next(k for k in range(3, len(tokens)) if tokens[k] not in tokens[:k])
    config = {"bos_token_id": 0, "eos_token_id": [1, tokens[position]], "pad_token_id": 2}
    build_tiny_model(store, "good/eos", extra_files={"generation_config.json": json.dumps(config)})
    return store


def _user(instruction: Instruction) -> dict[str, str]:
    return {"role": "user", "content": instruction.instruction}


def spec(store: LocalModelStore, repo_id: str, **options: str) -> RunSpec:
    """The run of ``repo_id`` at its main commit, on this CPU, from the store (as the runner gives it)."""
    run = RunSpec(
        model=repo_id,
        sha=store.resolve(repo_id, "main").sha,
        precision="bfloat16",
        weight_type="Original",
        base_model=None,
        use_chat_template=True,
        leaderboard="alpaca_eval_2",
        output_dir="out",
        cache_path="cache",
        model_store=str(store.root),
        device="cpu",
    )
    return replace(run, **options)


@pytest.fixture(scope="module")
def greedy(store: LocalModelStore) -> list[GeneratedOutput]:
    """good/tiny's outputs, one instruction at a time."""
    return generate_outputs(spec(store, "good/tiny"), INSTRUCTIONS, replace(SETTINGS, batch_size=1), "tiny")


def test_a_batch_gives_the_outputs_of_one_at_a_time_and_of_the_serving_loop(store, greedy):
    batched = generate_outputs(spec(store, "good/tiny"), INSTRUCTIONS, SETTINGS, "tiny")
    assert batched == greedy
    assert [(o.instruction, o.dataset, o.generator) for o in greedy] == [
        (i.instruction, "helpful_base", "tiny") for i in INSTRUCTIONS
    ]
    assert all(o.output.strip() for o in greedy), "the noise model writes text"
    # The serving endpoint's token-by-token loop over the same commit: the same greedy answers.
    loaded = load_model(store, "good/tiny", store.resolve("good/tiny", "main").sha, "cpu")
    for instruction, output in zip(INSTRUCTIONS, greedy, strict=True):
        completion = generate(loaded, loaded.chat_prompt([_user(instruction)]), Sampling(MAX_NEW_TOKENS))
        assert (output.output, output.tokens, output.finish_reason) == (
            completion.text,
            completion.usage.completion_tokens,
            completion.finish_reason,
        )
    assert "length" in {o.finish_reason for o in greedy}
    assert all(o.tokens == MAX_NEW_TOKENS for o in greedy if o.finish_reason == "length")


def test_stop_sequences_cut_the_output(store, greedy):
    first = greedy[0].output
    start = next(
        i for i in range(5, len(first) - 2) if first[i : i + 2].isascii() and first[i : i + 2].isalnum()
    )
    stop = first[start : start + 2]
    settings = replace(SETTINGS, stop=("never written, surely", stop))
    for batch_size in (1, 4):
        outputs = generate_outputs(
            spec(store, "good/tiny"), INSTRUCTIONS, replace(settings, batch_size=batch_size), "tiny"
        )
        for output, full in zip(outputs, greedy, strict=True):
            cut = full.output.find(stop)
            if cut < 0:
                assert (output.output, output.finish_reason) == (full.output, full.finish_reason)
            else:
                assert (output.output, output.finish_reason) == (full.output[:cut], "stop")
                assert output.tokens < MAX_NEW_TOKENS
        assert outputs[0].output == first[: first.find(stop)] and stop not in outputs[0].output


def test_an_end_of_turn_token_ends_the_output(store, greedy):
    outputs = generate_outputs(spec(store, "good/eos"), INSTRUCTIONS, SETTINGS, "eos")
    assert outputs[0].finish_reason == "stop"
    assert outputs[0].tokens < MAX_NEW_TOKENS
    assert greedy[0].output.startswith(outputs[0].output)
    assert outputs == generate_outputs(
        spec(store, "good/eos"), INSTRUCTIONS, replace(SETTINGS, batch_size=1), "eos"
    )


def test_max_new_tokens_caps_each_output(store, greedy):
    outputs = generate_outputs(
        spec(store, "good/tiny"), INSTRUCTIONS[:3], replace(SETTINGS, max_new_tokens=5), "tiny"
    )
    assert [(o.tokens, o.finish_reason) for o in outputs] == [(5, "length")] * 3
    assert all(full.output.startswith(o.output) for o, full in zip(outputs, greedy, strict=False))


def test_a_model_without_a_chat_template_is_refused(store, tmp_path):
    with pytest.raises(NoChatTemplate, match="rule 'chat template'") as caught:
        generate_outputs(
            spec(store, "good/no-template"), INSTRUCTIONS, SETTINGS, "tiny", tmp_path / "p.jsonl"
        )
    assert "add a chat_template to its tokenizer_config.json" in caught.value.message


def test_an_adapter_loads_on_its_base_model_with_peft(store, greedy):
    adapter = spec(store, "bad/adapter", weight_type="Adapter", base_model="good/tiny")
    outputs = generate_outputs(adapter, INSTRUCTIONS[:3], SETTINGS, "adapter")
    assert [o.output for o in outputs] != [o.output for o in greedy[:3]]  # the LoRA weights apply


def test_model_outputs_json_is_what_alpaca_eval_reads(greedy, tmp_path):
    path = write_model_outputs(tmp_path / "model_outputs.json", greedy)
    frame = import_alpaca_eval().utils.load_or_convert_to_dataframe(path)
    assert list(frame.columns) == ["dataset", "instruction", "output", "generator"]
    assert frame["output"].tolist() == [o.output for o in greedy]
    assert frame["generator"].unique().tolist() == ["tiny"]


def test_a_rerun_keeps_what_was_finished(store, greedy, tmp_path):
    own = LocalModelStore(tmp_path / "store")
    build_tiny_model(own, "good/tiny")  # the same build: the same commit and outputs
    run = spec(own, "good/tiny")
    progress = tmp_path / "attempt" / "outputs.jsonl"
    assert generate_outputs(run, INSTRUCTIONS[:3], SETTINGS, "tiny", progress) == greedy[:3]
    # Mark a finished output, and leave a line cut short by a kill: the rerun keeps the first, drops the second.
    lines = progress.read_text().splitlines()
    marked = json.loads(lines[1])
    lines[1] = json.dumps({**marked, "output": "finished before"})
    progress.write_text("\n".join(lines) + '\n{"index": 3, "instruction": "Wri')
    outputs = generate_outputs(run, INSTRUCTIONS, SETTINGS, "tiny", progress)
    assert outputs[marked["index"]].output == "finished before"
    assert [o for i, o in enumerate(outputs) if i != marked["index"]] == [
        o for i, o in enumerate(greedy) if i != marked["index"]
    ]
    assert len(progress.read_text().splitlines()) == 1 + len(INSTRUCTIONS)
    # Everything finished: the model is not even loaded again.
    shutil.rmtree(own.repo_dir("good/tiny"))
    assert generate_outputs(run, INSTRUCTIONS, replace(SETTINGS, batch_size=1), "tiny", progress) == outputs
    with pytest.raises(ModelOutputsInvalid, match="another generation"):
        generate_outputs(run, INSTRUCTIONS, replace(SETTINGS, max_new_tokens=8), "tiny", progress)


KILLED_RUN = """
import json, sys
from backend.evaluation.runner import RunSpec
from backend.judged.generate import GenerationSettings, generate_outputs
from backend.judged.outputs import Instruction
given = json.loads(sys.argv[1])
generate_outputs(
    RunSpec(**given["spec"]),
    [Instruction(**i) for i in given["instructions"]],
    GenerationSettings(**{**given["settings"], "stop": tuple(given["settings"]["stop"])}),
    "tiny",
    given["progress"],
)
"""


def test_a_killed_generation_resumes_where_it_stopped(store, tmp_path):
    instructions = [Instruction(f"Question {i}: what is {i} + {i}?", "math") for i in range(16)]
    settings = GenerationSettings(max_new_tokens=48, batch_size=1)
    run = spec(store, "good/tiny")
    progress = tmp_path / "outputs.jsonl"
    given = {
        "spec": asdict(run),
        "instructions": [asdict(i) for i in instructions],
        "settings": asdict(settings),
        "progress": str(progress),
    }
    env = {**os.environ, "PYTHONPATH": str(Path(backend.__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, json.dumps(given)], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (progress.is_file() and len(progress.read_text().splitlines()) >= 3):
            assert child.poll() is None, "the generation ended before it was killed"
            assert time.monotonic() < deadline, "the generation wrote no output in a minute"
            time.sleep(0.01)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    kept = [json.loads(line) for line in progress.read_text().splitlines()[1:] if line.endswith("}")]
    assert 2 <= len(kept) < len(instructions)
    resumed = generate_outputs(run, instructions, settings, "tiny", progress)
    assert resumed == generate_outputs(run, instructions, replace(settings, batch_size=8), "tiny")
    indexes = [json.loads(line)["index"] for line in progress.read_text().splitlines()[1:]]
    assert sorted(indexes) == list(range(len(instructions)))  # none generated twice
