"""Re-scoring: one benchmark (GPQA, 1,192 samples a model) of many stored results, from their per-sample
outputs, with a changed scorer, through ``RescoreService.rescore`` (each changed result stored as a new
version with its re-scored samples written).

Setup writes one model's per-sample outputs in lm-eval's samples format at realistic size (the dataset's
own columns, the prompt of each choice, log-likelihoods; about 7 kB a sample) and hard-links them into
every model's run folder, and stores the evaluations straight into the table. The files are read through
the page cache, as on a server that just wrote them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert

from backend.app import App
from backend.domain import Status
from backend.evaluation.tasks import load_task_set, tasks_folder
from backend.leaderboards.config import config_hash, load_config
from backend.leaderboards.normalize import normalize, standard_errors
from backend.services.rescore import RescoreService
from backend.settings import Settings
from backend.storage.schema import evaluations, requests
from bench.publishing import RESULTS_FIXTURE
from bench.stats import target

SIZES = {"full": {"models": 1_000}, "tiny": {"models": 3}}
BENCHMARK = "gpqa"
#: Documents per GPQA subset: what one full run stores.
DOCS = {"leaderboard_gpqa_diamond": 198, "leaderboard_gpqa_extended": 546, "leaderboard_gpqa_main": 448}
SCORER = "bench.scorers:gpqa_by_answer_length"
TARGET_SECONDS = 60.0
LABEL = "2026-01-01T00-00-00.000000"


def _text(rng: random.Random, chars: int) -> str:
    words = ["energy", "the", "reaction", "of", "a", "proton", "is", "measured", "in", "field", "orbital"]
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(words))
    return " ".join(out)


def _sample(doc_id: int, rng: random.Random) -> dict[str, Any]:
    """One GPQA sample record as lm-eval's tracker writes it (a processed doc with the dataset's columns)."""
    answers = [_text(rng, rng.randint(20, 160)) for _ in range(4)]
    answer = rng.randrange(4)
    doc = {
        "Question": _text(rng, 700),
        "Correct Answer": answers[answer],
        **{
            f"Incorrect Answer {i}": a
            for i, a in enumerate((a for j, a in enumerate(answers) if j != answer), 1)
        },
        "Explanation": _text(rng, 1500),
        "Subdomain": "Physics (general)",
        "High-level domain": "Physics",
        "Writer's Difficulty Estimate": "Hard graduate level",
        "Record ID": f"rec{doc_id:06d}",
        **{f"choice{i + 1}": a for i, a in enumerate(answers)},
        "answer": f"({'ABCD'[answer]})",
    }
    prompt = (
        f"What is the correct answer to this question:{doc['Question']}\nChoices:\n"
        + "".join(f"({'ABCD'[i]}) {a}\n" for i, a in enumerate(answers))
        + "Answer: "
    )
    lls = [[f"{-rng.uniform(1.0, 9.0):.6f}", "False"] for _ in range(4)]
    best = max(range(4), key=lambda i: float(lls[i][0]))
    return {
        "doc_id": doc_id,
        "doc": doc,
        "target": answer,
        "arguments": {f"gen_args_{i}": {"arg_0": prompt, "arg_1": f" ({'ABCD'[i]})"} for i in range(4)},
        "resps": [[pair] for pair in lls],
        "filtered_resps": lls,
        "filter": "none",
        "metrics": ["acc_norm"],
        "doc_hash": hashlib.sha256(json.dumps(doc).encode()).hexdigest(),
        "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest(),
        "target_hash": hashlib.sha256(str(answer).encode()).hexdigest(),
        "acc_norm": 1.0 if best == answer else 0.0,
    }


def write_samples(folder: Path) -> tuple[list[Path], int]:
    """One model's GPQA samples files; (files, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    files, size = [], 0
    for task, docs in DOCS.items():
        path = folder / f"samples_{task}_{LABEL}.jsonl"
        path.write_text("".join(json.dumps(_sample(i, rng)) + "\n" for i in range(docs)), encoding="utf-8")
        files.append(path)
        size += path.stat().st_size
    return files, size


def _task_set(folder: Path) -> Path:
    """The pinned manifest, with the changed scorer on every GPQA task."""
    manifest = yaml.safe_load((tasks_folder() / "open_llm_v2.yaml").read_text(encoding="utf-8"))
    for task in manifest["tasks"]:
        if task["name"] in DOCS:
            task["process_results"] = SCORER
    path = folder / "manifest-rescore.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


def _load(app: App, n: int, samples: list[Path], root: Path) -> None:
    config = load_config()
    results = json.loads(RESULTS_FIXTURE.read_text())
    scores, stderrs, digest = (
        normalize(results, config),
        standard_errors(results, config),
        config_hash(config),
    )
    now = datetime.now(UTC) - timedelta(days=1)
    request_rows, evaluation_rows = [], []
    for i in range(1, n + 1):
        run = root / "runs" / f"request-{i}" / "attempt-1" / "harness"
        run.mkdir(parents=True)
        files = []
        for path in samples:
            os.link(path, run / path.name)
            files.append(str(run / path.name))
        request_rows.append(
            {
                "id": i, "model": f"org/model-{i}", "namespace": "org", "revision": "main", "sha": f"{i:040x}",
                "precision": "bfloat16", "weight_type": "Original", "model_type": "fine-tuned",
                "base_model": None, "use_chat_template": False, "params_b": 7.0, "architectures": [],
                "license": "mit", "sender": "alice", "status": Status.FINISHED.value, "votes": 1,
                "attempts": 1, "submitted_at": now, "updated_at": now,
            }
        )  # fmt: skip
        evaluation_rows.append(
            {
                "id": i, "request_id": i, "leaderboard": config.name, "config_hash": digest, "scores": scores,
                "stderrs": stderrs, "results": results, "provenance": {"samples_files": files},
                "artifacts": str(run), "attempt": 1, "worker_id": "w", "started_at": now, "finished_at": now,
                "duration_seconds": 3600.0, "version": 1, "recorded_at": now,
            }
        )  # fmt: skip
    with app.db.transaction() as conn:
        conn.execute(insert(requests), request_rows)
        conn.execute(insert(evaluations), evaluation_rows)


def run(size: str, root: Path) -> dict[str, Any]:
    from backend.evaluation.synthetic import synthesize

    n = SIZES[size]["models"]
    mirror = synthesize(root / "mirror", rows=6)
    samples, size_bytes = write_samples(root / "samples")
    settings = Settings(
        database_url=f"sqlite:///{root / 'rescore.db'}", data_mirror=mirror, work_dir=root / "work"
    )
    app = App.open(settings)
    try:
        _load(app, n, samples, root / "work")
        service = RescoreService(
            settings,
            app.evaluations,
            app.requests,
            app.clock,
            config=load_config(task_set=load_task_set(_task_set(root))),
        )
        started = time.perf_counter()
        rescored = service.rescore(BENCHMARK)
        seconds = time.perf_counter() - started
    finally:
        app.close()
    stored = sum(1 for r in rescored if r.version is not None)
    assert len(rescored) == n, (len(rescored), n)
    samples_per_model = sum(DOCS.values())
    return {
        "database": "sqlite",
        "benchmark": BENCHMARK,
        "scorer": SCORER,
        "models": n,
        "samples_per_model": samples_per_model,
        "sample_bytes_mean": size_bytes / samples_per_model,
        "samples_bytes_per_model": size_bytes,
        "new_versions_stored": stored,
        "seconds": seconds,
        "seconds_per_model": seconds / n,
        "samples_per_second": n * samples_per_model / seconds,
        "target_seconds": target(seconds, TARGET_SECONDS),
    }
