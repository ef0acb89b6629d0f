"""Synthetic judged data: a few made-up instructions, reference outputs and a GLM table in the real
schemas (tatsu-lab/alpaca_eval's splits and its df_gamed.csv), written into a data mirror for tests, demos
and development without the Hub. Scores on it are meaningless; it exists so the whole pipeline runs.

The instruction set and the reference have the same instruction texts in the same order, as AlpacaEval's
configs do; the table has two gamed baselines (verbose and concise versions of the reference) with a
difficulty for every instruction, by position, as df_gamed.csv has.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backend.evaluation import data as mirror_data
from backend.evaluation.synthetic import content_revision
from backend.judged.config import DatasetRef, GlmTable, JudgedConfig
from backend.judged.data import judged_data_files, mirror_path

#: df_gamed.csv's columns, in its order (alpaca-eval drops "model" and reads the rest).
GLM_TABLE_HEADER = (
    "model",
    "index",
    "instruction_difficulty",
    "not_gamed_baseline",
    "std_delta_len",
    "preference",
)
GAMED_BASELINES = (("gpt4_1106_preview_verbose", -1.0), ("gpt4_1106_preview_concise", 1.0))
#: AlpacaEval's source sets, and the generator of its alpaca_eval config's outputs.
SOURCE_SETS = ("helpful_base", "koala", "oasst", "selfinstruct", "vicuna")
INSTRUCTION_SET_GENERATOR = "text_davinci_003"
_VERBS = ("Explain", "Describe", "Summarize", "Compare", "List the steps to", "Write a short poem about")
_TOPICS = (
    "how a river forms a delta",
    "the history of the printing press",
    "why the sky looks blue",
    "a café in Zürich at dawn",
    "baking bread without yeast",
    "the rules of chess for a beginner",
    "how vaccines train the immune system",
    "the water cycle",
)
_WORDS_TEXT = "the a model answer river light bread chess water because then so first next finally 🙂 é"
_WORDS = tuple(_WORDS_TEXT.split())


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def write_glm_table(path: Path, n_instructions: int, seed: int = 7, index_column: bool = False) -> Path:
    """A table in df_gamed.csv's shape: two gamed versions of the reference (verbose, concise), one row per
    instruction each, preferences in [0, 1] (instruction 5 not judged, as some are), a difficulty per
    instruction. ``index_column``: with pandas' unnamed row-number column first, as ``to_csv`` writes it."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n_instructions)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("", *GLM_TABLE_HEADER) if index_column else GLM_TABLE_HEADER)
        number = 0
        for model, shift in GAMED_BASELINES:
            for i in range(n_instructions):
                std_delta_len = float(rng.normal() + shift)
                p = _sigmoid(-1.2 * math.tanh(std_delta_len) + difficulty[i] + rng.normal(scale=0.3))
                row = [
                    model,
                    i,
                    repr(float(difficulty[i])),
                    False,
                    repr(std_delta_len),
                    "" if i == 5 else repr(p),
                ]
                writer.writerow([number, *row] if index_column else row)
                number += 1
    return path


def _instructions(rng: random.Random, rows: int) -> list[str]:
    return [f"{rng.choice(_VERBS)} {rng.choice(_TOPICS)} (question {i})." for i in range(rows)]


def _output(rng: random.Random) -> str:
    """An answer of varied length (the GLM's length term needs variety), some characters outside ASCII."""
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 120))).capitalize() + "."


def _split(ref: DatasetRef, configs: Sequence[JudgedConfig], instructions: list[str], seed: int) -> pa.Table:
    """One split in AlpacaEval's schema (instruction, output, generator, dataset), under the configs' names."""
    generator = INSTRUCTION_SET_GENERATOR
    fields: dict[str, str] = {"instruction": "instruction", "output": "output", "generator": "generator"}
    fields["dataset"] = "dataset"
    for config in configs:
        if config.instructions.dataset == ref:
            fields[config.instructions.instruction_field] = "instruction"
            if config.instructions.dataset_field:
                fields[config.instructions.dataset_field] = "dataset"
        if config.reference.dataset == ref:
            generator = config.reference.generator
            fields[config.reference.instruction_field] = "instruction"
            fields[config.reference.output_field] = "output"
    rng = random.Random(f"{seed}/{ref.repo}/{ref.config}/{ref.split}")
    values: dict[str, list[Any]] = {
        "instruction": instructions,
        "output": [_output(rng) for _ in instructions],
        "generator": [generator] * len(instructions),
        "dataset": [SOURCE_SETS[i % len(SOURCE_SETS)] for i in range(len(instructions))],
    }
    return pa.table({name: pa.array(values[kind], pa.string()) for name, kind in fields.items()})


def synthesize_judged(
    mirror: Path, configs: Sequence[JudgedConfig], rows: int = 12, seed: int = 0
) -> dict[str, str]:
    """Write every split and file the judged configs read into an existing mirror (after the task set's),
    ``rows`` instructions each, and record them in its manifest; return repo -> revision.

    Deterministic: the same rows and seed give byte-identical files; each repository's revision is
    ``synthetic-<hash of its files>``.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    mirror = Path(mirror).resolve()
    instructions = _instructions(random.Random(f"{seed}/instructions"), rows)
    written: dict[DatasetRef | GlmTable, int] = {}
    for ref in dict.fromkeys(ref for config in configs for ref in judged_data_files(config)):
        path = mirror_path(mirror, ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(ref, GlmTable):
            write_glm_table(path, rows, seed=seed)
            written[ref] = rows * len(GAMED_BASELINES)
        else:
            pq.write_table(_split(ref, configs, instructions, seed), path)
            written[ref] = rows
    revisions = {
        repo: content_revision(mirror, [mirror_path(mirror, ref) for ref in written if ref.repo == repo])
        for repo in dict.fromkeys(ref.repo for ref in written)
    }
    entries = {}
    for ref, count in written.items():
        where = (
            {"file": ref.filename}
            if isinstance(ref, GlmTable)
            else {"config": ref.config, "split": ref.split}
        )
        name, entry = mirror_data.manifest_entry(
            mirror,
            mirror_path(mirror, ref),
            repo=ref.repo,
            source="synthetic",
            revision=revisions[ref.repo],
            rows=count,
            **where,
        )
        entries[name] = entry
    mirror_data.add_to_manifest(mirror, entries)
    return revisions
