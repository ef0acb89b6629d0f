"""The arena's ratings: a Bradley-Terry fit and 100 bootstrap rounds over 1,000,000 synthetic battles of 100
models, read from a Parquet file (and, for comparison, from a JSON file as the public releases are).

Battles are drawn from known strengths (normal, sd 0.5 in log10 units, i.e. 200 rating points), between
random pairs, ties up to 10% (fewer between unequal models); the figures also say how far the fit landed from the strengths drawn from. The
bootstrap is timed in this process and over 2 spawned processes, to show what the automatic choice of
workers (``backend.arena.ratings.PROCESS_MODELS``) rests on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backend.arena.battles import read_battles
from backend.arena.ratings import fit_ratings
from bench.stats import target

SIZES = {"full": {"battles": 1_000_000, "models": 100, "rounds": 100}, "tiny": {"battles": 2_000, "models": 10, "rounds": 10}}  # fmt: skip
TARGET_SECONDS = 30.0
SEED = 0


def synthetic(folder: Path, battles: int, models: int) -> tuple[Path, Path, np.ndarray]:
    """The battles as Parquet and as JSON records; (parquet, json, the strengths drawn from)."""
    rng = np.random.default_rng(SEED)
    strengths = rng.normal(0.0, 0.5, models)
    a = rng.integers(0, models, battles)
    b = rng.integers(0, models - 1, battles)
    b = np.where(b >= a, b + 1, b)
    p = 1.0 / (1.0 + 10.0 ** (strengths[b] - strengths[a]))
    # Ties that keep a's expected score at p (a tie is half a win): P(tie) = 0.2 min(p, 1 - p), up to 10%.
    # Ties at a fixed rate, whatever the pair, would pull the fitted ratings together.
    tie = 0.2 * np.minimum(p, 1.0 - p)
    u = rng.random(battles)
    winner = np.where(u < p - tie / 2, "model_a", np.where(u < p + tie / 2, "tie", "model_b"))
    names = np.array([f"org/model-{k:03d}" for k in range(models)])
    table = pa.table(
        {"model_a": names[a], "model_b": names[b], "winner": winner, "anony": np.ones(battles, bool)}
    )
    folder.mkdir(parents=True, exist_ok=True)
    parquet, records = folder / "battles.parquet", folder / "battles.json"
    pq.write_table(table, parquet)
    records.write_text(json.dumps(table.to_pylist()), encoding="utf-8")
    return parquet, records, strengths


def run(size: str, root: Path) -> dict[str, Any]:
    n, models, rounds = (SIZES[size][k] for k in ("battles", "models", "rounds"))
    parquet, records, strengths = synthetic(root, n, models)

    started = time.perf_counter()
    battles = read_battles(parquet)
    read_seconds = time.perf_counter() - started
    fit = fit_ratings(battles, bootstrap=rounds, seed=SEED)
    seconds = time.perf_counter() - started
    fit_seconds = seconds - read_seconds

    started = time.perf_counter()
    read_battles(records)
    json_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fit_ratings(battles, bootstrap=rounds, seed=SEED, workers=2)
    two_processes = time.perf_counter() - started

    expected = 1000 + 400 * (strengths - strengths.mean())
    by_name = {m.model: m for m in fit.models}
    drawn = {f"org/model-{k:03d}": expected[k] for k in range(models)}
    errors = [abs(by_name[name].rating - value) for name, value in drawn.items()]
    covered = sum(
        by_name[name].rating_lower <= value <= by_name[name].rating_upper for name, value in drawn.items()
    )
    return {
        "battles": n,
        "models": models,
        "bootstrap_rounds": rounds,
        "parquet_bytes": parquet.stat().st_size,
        "json_bytes": records.stat().st_size,
        "read_parquet_seconds": read_seconds,
        "read_json_seconds": json_seconds,
        "fit_and_bootstrap_seconds": fit_seconds,
        "fit_and_bootstrap_two_processes_seconds": two_processes,
        "seconds": seconds,
        "max_abs_error_from_drawn": max(errors),
        "drawn_inside_interval_share": covered / models,
        "target_seconds": target(seconds, TARGET_SECONDS),
    }
