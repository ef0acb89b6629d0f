"""A generation's records: the instructions in, AlpacaEval's model_outputs.json out, and the progress file
that lets a killed generation resume where it stopped.

model_outputs.json is what alpaca-eval reads as ``model_outputs``: a JSON list, one record per instruction,
with ``dataset``, ``instruction``, ``output`` and ``generator`` (the columns alpaca-eval's own generation
keeps). The progress file is JSON lines in the attempt folder: a header naming the generation (model,
revision, dtype, decoding...), then one line per finished output, appended and flushed as each batch ends.
A rerun over the same file keeps the outputs whose index and instruction match and generates the rest; a
last line cut short by a kill is dropped. A header of another generation is refused: its outputs would be
mixed with these.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backend.domain import preview
from backend.errors import InvalidInput, ModelOutputsInvalid
from backend.judged.annotations import MAX_NAME_CHARS, MAX_RECORDS, MAX_TEXT_CHARS

#: Finish reasons: the model ended its turn or wrote a stop sequence; or max_new_tokens was reached.
FINISH_REASONS = ("stop", "length")
PROGRESS_FORMAT = 1


@dataclass(frozen=True)
class Instruction:
    """One prompt of an instruction set: the user turn the model answers, and the subset it comes from."""

    instruction: str
    dataset: str


@dataclass(frozen=True)
class GeneratedOutput:
    """The evaluated model's answer to one instruction."""

    instruction: str
    dataset: str
    output: str
    generator: str
    tokens: int  # tokens the model generated, an end of turn included
    finish_reason: str  # one of FINISH_REASONS

    def record(self) -> dict[str, str]:
        """The record of model_outputs.json."""
        return {
            "dataset": self.dataset,
            "instruction": self.instruction,
            "output": self.output,
            "generator": self.generator,
        }


def check_instructions(instructions: Sequence[Instruction]) -> None:
    """Refuse an instruction set a generation cannot take: too many, or a field that is not a bounded string."""
    if not instructions:
        raise InvalidInput("the instruction set is empty: give at least one instruction")
    if len(instructions) > MAX_RECORDS:
        raise InvalidInput(
            f"the instruction set has {len(instructions)} instructions, more than the {MAX_RECORDS} generated "
            "at once: split it"
        )
    for index, item in enumerate(instructions):
        for field, limit in (("instruction", MAX_TEXT_CHARS), ("dataset", MAX_NAME_CHARS)):
            value = getattr(item, field)
            if not isinstance(value, str):
                raise InvalidInput(
                    f"instruction {index} (counting from 0): {field} is {preview(value)}, not a string"
                )
            if len(value) > limit:
                raise InvalidInput(
                    f"instruction {index} (counting from 0): {field} has {len(value)} characters, more than "
                    f"{limit}: shorten it or leave it out of the instruction set"
                )
        if not item.instruction.strip():
            raise InvalidInput(
                f"instruction {index} (counting from 0) is empty: give every instruction some text"
            )


def check_generator(generator: str) -> str:
    if not isinstance(generator, str) or not generator.strip() or len(generator) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"the generator name {preview(generator)} is not a name: give 1 to {MAX_NAME_CHARS} characters "
            "(the evaluated model's name in the outputs)"
        )
    return generator


def write_model_outputs(path: Path, outputs: Iterable[GeneratedOutput]) -> Path:
    """Write AlpacaEval's model_outputs.json at ``path``, whole or not at all (a temporary file renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [output.record() for output in outputs]
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp"
    ) as f:
        json.dump(records, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)
    return path


class ProgressFile:
    """The finished outputs of one generation, durable as each is appended (see the module docstring)."""

    def __init__(self, path: Path, header: dict[str, Any], done: dict[int, GeneratedOutput]) -> None:
        self.path = path
        self.header = header
        self.done = done
        self._file: IO[str] | None = None

    @classmethod
    def open(cls, path: Path, header: dict[str, Any], instructions: Sequence[Instruction]) -> ProgressFile:
        """The progress at ``path`` for this generation (``header``) over ``instructions``: the outputs it
        already holds, and a file ready for appending (created with the header when there is none)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.loads(json.dumps(header))  # as it reads back: tuples are lists
        done: dict[int, GeneratedOutput] = {}
        kept: list[str] = []
        if path.is_file():
            kept, done = _read_progress(path, header, instructions)
            # Rewritten without a line a kill cut short, so that appends start on a line of their own.
            _replace(path, kept)
        else:
            _replace(path, [json.dumps({"format": PROGRESS_FORMAT, "generation": header}, sort_keys=True)])
        progress = cls(path, header, done)
        progress._file = path.open("a", encoding="utf-8")
        return progress

    def append(self, outputs: Iterable[tuple[int, GeneratedOutput]]) -> None:
        """Record finished outputs (index in the instruction set, output), flushed and synced to disk."""
        assert self._file is not None, "the progress file is closed"
        for index, output in outputs:
            line = {"index": index, **output.record(), "tokens": output.tokens}
            line["finish_reason"] = output.finish_reason
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.done[index] = output
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ProgressFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _replace(path: Path, lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp"
    ) as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


#: A progress file's size: AlpacaEval's 805 outputs are a few MB.
_MAX_PROGRESS_BYTES = 2**30


def _read_progress(
    path: Path, header: dict[str, Any], instructions: Sequence[Instruction]
) -> tuple[list[str], dict[int, GeneratedOutput]]:
    source = str(path)
    fix = "remove the file to generate every output again, or give this generation a folder of its own"
    if path.stat().st_size > _MAX_PROGRESS_BYTES:
        raise ModelOutputsInvalid(source, "larger than any generation's progress file", fix)
    pieces = path.read_bytes().split(b"\n")
    pieces.pop()  # after the last newline: nothing, or the line a kill cut short
    try:
        lines = [piece.decode("utf-8") for piece in pieces]
    except UnicodeDecodeError as exc:
        raise ModelOutputsInvalid(source, "not UTF-8 text", fix) from exc
    if not lines:  # killed before the header was whole
        return [json.dumps({"format": PROGRESS_FORMAT, "generation": header}, sort_keys=True)], {}
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise ModelOutputsInvalid(source, "its first line is not a generation's header", fix) from exc
    if not isinstance(first, dict) or first.get("format") != PROGRESS_FORMAT:
        raise ModelOutputsInvalid(source, "its first line is not a generation's header", fix)
    if first.get("generation") != header:
        raise ModelOutputsInvalid(
            source,
            f"it holds the outputs of another generation ({preview(first.get('generation'), 300)}, not "
            f"{preview(header, 300)})",
            fix,
        )
    done: dict[int, GeneratedOutput] = {}
    for number, line in enumerate(lines[1:], start=2):
        index, output = _output_line(line, f"line {number}", source, fix, header)
        if index >= len(instructions) or instructions[index] != Instruction(
            output.instruction, output.dataset
        ):
            raise ModelOutputsInvalid(
                source,
                f"line {number} is the output of instruction {index}, which is not that instruction in this "
                "instruction set",
                fix,
            )
        if index in done:
            raise ModelOutputsInvalid(source, f"line {number} repeats the output of instruction {index}", fix)
        done[index] = output
    return lines, done


def _output_line(
    line: str, where: str, source: str, fix: str, header: dict[str, Any]
) -> tuple[int, GeneratedOutput]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ModelOutputsInvalid(source, f"{where} is not JSON", fix) from exc
    if not isinstance(value, dict):
        raise ModelOutputsInvalid(source, f"{where} is not an object", fix)
    index, tokens = value.get("index"), value.get("tokens")
    texts = {field: value.get(field) for field in ("instruction", "dataset", "output", "generator")}
    valid = (
        type(index) is int
        and index >= 0
        and type(tokens) is int
        and tokens >= 0
        and value.get("finish_reason") in FINISH_REASONS
        and all(isinstance(text, str) and len(text) <= MAX_TEXT_CHARS for text in texts.values())
        and texts["generator"] == header.get("generator")
    )
    if not valid:
        raise ModelOutputsInvalid(
            source,
            f"{where} is not an output record (index, instruction, dataset, output, generator, tokens, "
            "finish_reason)",
            fix,
        )
    assert isinstance(index, int) and isinstance(tokens, int)
    output = GeneratedOutput(tokens=tokens, finish_reason=value["finish_reason"], **texts)  # type: ignore[arg-type]
    return index, output
