"""The judged generation's pure parts: decoding settings, loading arguments, the bounds on instructions, the
progress file a killed generation resumes from, and model_outputs.json."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from backend.errors import InvalidInput, ModelOutputsInvalid, UnsupportedRun
from backend.evaluation.runner import RunSpec
from backend.judged.generate import (
    Decoded,
    GenerationSettings,
    _output,
    generate_outputs,
    generation_header,
    load_arguments,
)
from backend.judged.outputs import (
    GeneratedOutput,
    Instruction,
    ProgressFile,
    check_instructions,
    write_model_outputs,
)

SPEC = RunSpec(
    model="org/chat",
    sha="a" * 40,
    precision="bfloat16",
    weight_type="Original",
    base_model=None,
    use_chat_template=True,
    leaderboard="alpaca_eval_2",
    output_dir="out",
    cache_path="cache",
    device="cpu",
)
INSTRUCTIONS = [Instruction(f"question {i}", "helpful_base") for i in range(4)]
HEADER = generation_header(load_arguments(SPEC), GenerationSettings(max_new_tokens=8, stop=("\n\n",)), "chat")


def output(i: int, text: str = "answer") -> GeneratedOutput:
    return GeneratedOutput(f"question {i}", "helpful_base", f"{text} {i}", "chat", 3, "stop")


def test_only_greedy_decoding_is_supported():
    with pytest.raises(UnsupportedRun, match="greedily only"):
        GenerationSettings(temperature=0.7)
    assert GenerationSettings(temperature=0).temperature == 0


@pytest.mark.parametrize(
    "options",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": 10**6},
        {"max_new_tokens": True},
        {"batch_size": 0},
        {"seed": -1},
        {"stop": ["\n"]},
        {"stop": ("",)},
        {"stop": ("x" * 300,)},
        {"temperature": "0"},
    ],
)
def test_settings_out_of_bounds_are_refused(options):
    with pytest.raises(InvalidInput):
        GenerationSettings(**options)


def test_the_batch_size_is_no_part_of_the_decoding():
    assert GenerationSettings(batch_size=1).decoding() == GenerationSettings(batch_size=32).decoding()
    assert GenerationSettings(stop=("a",)).decoding() != GenerationSettings().decoding()


def test_loading_arguments_are_the_harness_runs():
    args = load_arguments(SPEC)
    # bfloat16 is computed in float32 on a CPU, as the harness child does; never remote code.
    assert args == {
        "dtype": "float32",
        "trust_remote_code": False,
        "pretrained": "org/chat",
        "revision": "a" * 40,
        "device": "cpu",
    }
    adapter = load_arguments(replace(SPEC, weight_type="Adapter", base_model="org/base"))
    assert (adapter["pretrained"], adapter["peft"], adapter["peft_revision"]) == (
        "org/base",
        "org/chat",
        "a" * 40,
    )
    with pytest.raises(UnsupportedRun, match="merged weights as Original"):
        load_arguments(replace(SPEC, weight_type="Delta", base_model="org/base"))
    with pytest.raises(UnsupportedRun, match="LEADERBOARD_EVAL_BACKEND=hf"):
        load_arguments(replace(SPEC, backend="vllm", weight_type="Adapter", base_model="org/base"))
    with pytest.raises(UnsupportedRun, match="not one of hf, vllm"):
        load_arguments(replace(SPEC, backend="tgi"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_the_vllm_backend_without_vllm_says_how_to_install_it(tmp_path):
    with pytest.raises(UnsupportedRun, match=r"pip install '\.\[vllm\]'"):
        generate_outputs(
            replace(SPEC, backend="vllm"), INSTRUCTIONS, GenerationSettings(), "chat", tmp_path / "p"
        )
    assert not (tmp_path / "p").exists()


def test_instructions_are_bounded():
    check_instructions(INSTRUCTIONS)
    with pytest.raises(
        InvalidInput, match=r"instruction 1 \(counting from 0\): instruction has 200001 characters"
    ):
        check_instructions([INSTRUCTIONS[0], Instruction("x" * 200_001, "helpful_base")])
    with pytest.raises(InvalidInput, match="is empty"):
        check_instructions([Instruction("  ", "helpful_base")])
    with pytest.raises(InvalidInput, match="not a string"):
        check_instructions([Instruction(None, "helpful_base")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="more than the 10000"):
        check_instructions(INSTRUCTIONS * 2501)
    with pytest.raises(InvalidInput, match="generator name"):
        generate_outputs(SPEC, INSTRUCTIONS, GenerationSettings(), " ")


def test_progress_is_kept_across_opens(tmp_path):
    path = tmp_path / "attempt" / "outputs.jsonl"
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        assert progress.done == {}
        progress.append([(2, output(2)), (0, output(0))])
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        assert progress.done == {0: output(0), 2: output(2)}
        progress.append([(1, output(1))])
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["generation"]["decoding"]["stop"] == ["\n\n"]
    assert [json.loads(line)["index"] for line in lines[1:]] == [2, 0, 1]


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "outputs.jsonl"
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        progress.append([(0, output(0))])
    with path.open("a") as f:
        f.write('{"index": 1, "instruction": "question 1", "out')  # no newline: the kill came mid-write
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        assert progress.done == {0: output(0)}
        progress.append([(1, output(1))])
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        assert progress.done == {0: output(0), 1: output(1)}


def test_a_header_cut_short_starts_again(tmp_path):
    path = tmp_path / "outputs.jsonl"
    path.write_text('{"format": 1, "gen')
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        assert progress.done == {}
    assert json.loads(path.read_text().splitlines()[0])["generation"] == HEADER


@pytest.mark.parametrize(
    ("header", "instructions", "line", "problem"),
    [
        ({**HEADER, "generator": "other"}, INSTRUCTIONS, None, "another generation"),
        (HEADER, [Instruction("changed", "helpful_base")] * 4, None, "not that instruction"),
        (HEADER, INSTRUCTIONS[:1], None, "not that instruction"),
        (HEADER, INSTRUCTIONS, '{"index": 1, "output": 3}', "line 3 is not an output record"),
        (HEADER, INSTRUCTIONS, "[1, 2]", "line 3 is not an object"),
        (HEADER, INSTRUCTIONS, "not json", "line 3 is not JSON"),
    ],
)
def test_progress_of_another_generation_is_refused(tmp_path, header, instructions, line, problem):
    path = tmp_path / "outputs.jsonl"
    with ProgressFile.open(path, HEADER, INSTRUCTIONS) as progress:
        progress.append([(1, output(1))])
    if line is not None:
        with path.open("a") as f:
            f.write(line + "\n")
    before = path.read_bytes()
    with pytest.raises(ModelOutputsInvalid, match=problem) as caught:
        ProgressFile.open(path, header, instructions)
    assert "remove the file" in caught.value.fix
    assert path.read_bytes() == before  # refused, not rewritten


def test_a_file_that_is_no_progress_file_is_refused(tmp_path):
    path = tmp_path / "outputs.jsonl"
    path.write_text('[{"instruction": "question 0"}]\n')
    with pytest.raises(ModelOutputsInvalid, match="not a generation's header"):
        ProgressFile.open(path, HEADER, INSTRUCTIONS)


def test_model_outputs_are_alpaca_evals_layout(tmp_path: Path):
    path = write_model_outputs(tmp_path / "results" / "model_outputs.json", [output(0), output(1, "é🙂")])
    assert json.loads(path.read_text(encoding="utf-8")) == [
        {"dataset": "helpful_base", "instruction": "question 0", "output": "answer 0", "generator": "chat"},
        {"dataset": "helpful_base", "instruction": "question 1", "output": "é🙂 1", "generator": "chat"},
    ]
    assert [p.name for p in path.parent.iterdir()] == ["model_outputs.json"]  # no temporary file left


def test_an_output_is_cut_to_the_bound_outputs_files_are_read_with():
    long = Decoded("ab" * 150_000, 32_768, "stop")
    made = _output(INSTRUCTIONS[0], long, "chat")
    assert (len(made.output), made.finish_reason, made.tokens) == (200_000, "length", 32_768)
    assert _output(INSTRUCTIONS[0], Decoded("short", 2, "stop"), "chat").output == "short"
