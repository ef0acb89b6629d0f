"""Generated judged data: one model's annotations as alpaca-eval writes them, and tables in df_gamed.csv's
shape (AlpacaEval's instruction difficulties and gamed baselines, which are not available offline): the
synthetic data mirror's own generator, so tests and ``leaderboard data synthesize`` write one kind of table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from backend.judged.synthetic import write_glm_table as write_table

__all__ = ["make_records", "write_annotations", "write_table"]


def _text(rng: np.random.Generator, n: int) -> str:
    """``n`` characters, some outside ASCII (é, an emoji): lengths are counted in characters."""
    alphabet = np.array(list("abcdefghij klmnop\nqrstuvwxyzé🙂"))
    return "".join(rng.choice(alphabet, size=n))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def make_records(seed: int, n: int, kind: str, model: str = "my-model") -> list[dict[str, Any]]:
    """One model's annotations as alpaca-eval writes them, with verdicts of the given ``kind``."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n)
    records = []
    for i in range(n):
        len_1 = int(rng.lognormal(6, 1)) + 1
        len_2 = int(rng.lognormal(6.5, 1.2)) + 1
        # A longer output_2 wins more often: the GLM has something to remove.
        biased = 1 + _sigmoid(
            0.4 + difficulty[i] - 1.5 * math.tanh((len_1 - len_2) / 600) + rng.normal(scale=0.4)
        )
        if kind == "uniform":
            preference: Any = float(rng.uniform(1, 2))
        elif kind == "draws":
            preference = [1, 2, 1.5, 0, biased, biased][int(rng.integers(6))]
        elif kind == "missing":
            preference = [None, math.nan, "absent", biased, biased, 0, 1.5][int(rng.integers(7))]
        elif kind == "length_biased":
            preference = biased
        else:
            raise AssertionError(kind)
        record = {
            # Duplicate instructions, as alpaca-eval allows.
            "instruction": f"instruction {i % (n - 3)}",
            "output_1": _text(rng, len_1),
            "generator_1": "gpt4_1106_preview",
            "output_2": _text(rng, len_2),
            "generator_2": model,
            "annotator": "weighted_alpaca_eval_gpt4_turbo",
            "price_per_example": 0.01,
            "raw_completion": {"logprobs": [float(rng.uniform())]},
        }
        if not (isinstance(preference, str) and preference == "absent"):
            record["preference"] = preference
        records.append(record)
    return records


def write_annotations(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")  # NaN as alpaca-eval writes it
    return path
