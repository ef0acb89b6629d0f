"""The queue at scale, on SQLite and on PostgreSQL: claims, votes from concurrent writers, the ranked page.

Setup bulk-loads pending requests and their votes straight into the tables (Core executemany in large
batches; not measured). What is measured are the service calls a worker, a voter and a reader make:
``QueueService.claim``, ``VoteService.vote`` and ``QueueService.page``, each call timed on its own.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from backend.app import App
from backend.domain import Status
from backend.settings import Settings
from backend.storage.schema import requests, votes
from bench.databases import fresh_database
from bench.stats import latency_ms, target

SIZES: dict[str, dict[str, int]] = {
    "full": {"requests": 100_000, "votes": 1_000_000, "claims": 1_000, "writers": 8, "votes_each": 500,
             "pages": 200},
    "tiny": {"requests": 500, "votes": 2_000, "claims": 20, "writers": 8, "votes_each": 5, "pages": 10},
}  # fmt: skip
BATCH = 20_000
TARGET_CLAIM_P99_MS = 20.0  # on PostgreSQL
TARGET_VOTES_PER_SECOND = 1_000.0


def _vote_counts(n_requests: int, n_votes: int, rng: random.Random) -> list[int]:
    """Votes per request: the submitter's own, plus the rest spread with a long tail (a few popular)."""
    counts = [1] * n_requests
    weights = [1.0 / (rank + 10) for rank in range(n_requests)]
    rng.shuffle(weights)
    for index in rng.choices(range(n_requests), weights=weights, k=n_votes - n_requests):
        counts[index] += 1
    return counts


def _request_rows(counts: list[int], now: datetime) -> Iterator[dict[str, Any]]:
    for index, count in enumerate(counts):
        request_id = index + 1
        submitted = now - timedelta(seconds=len(counts) - index)
        yield {
            "id": request_id,
            "model": f"org-{request_id % 997}/model-{request_id}",
            "namespace": f"org-{request_id % 997}",
            "revision": "main",
            "sha": f"{request_id:040x}",
            "precision": "bfloat16",
            "weight_type": "Original",
            "model_type": "fine-tuned",
            "base_model": None,
            "use_chat_template": False,
            "params_b": 7.0,
            "architectures": ["LlamaForCausalLM"],
            "license": "apache-2.0",
            "sender": f"user-{request_id}",
            "status": Status.PENDING.value,
            "votes": count,
            "attempts": 0,
            "submitted_at": submitted,
            "updated_at": submitted,
        }


def _vote_rows(counts: list[int], now: datetime) -> Iterator[dict[str, Any]]:
    for index, count in enumerate(counts):
        request_id = index + 1
        yield {"request_id": request_id, "voter": f"user-{request_id}", "created_at": now}
        for voter in range(1, count):
            yield {"request_id": request_id, "voter": f"voter-{voter}", "created_at": now}


def _batches(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def bulk_load(app: App, n_requests: int, n_votes: int, seed: int = 0) -> float:
    """Fill the queue: ``n_requests`` pending requests holding ``n_votes`` votes in all; seconds taken."""
    started = time.perf_counter()
    counts = _vote_counts(n_requests, n_votes, random.Random(seed))
    now = datetime.now(UTC) - timedelta(days=1)
    for table, rows in ((requests, _request_rows(counts, now)), (votes, _vote_rows(counts, now))):
        for batch in _batches(rows):
            with app.db.transaction() as conn:
                conn.execution_options(insertmanyvalues_page_size=5_000).execute(insert(table), batch)
    with app.db.transaction() as conn:
        if app.db.is_postgres:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('requests', 'id'), :n)"), {"n": n_requests}
            )
    with app.db.engine.connect() as conn:  # fresh statistics, as autovacuum would leave them
        conn.execute(text("ANALYZE"))
        conn.commit()
    return time.perf_counter() - started


def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def _claims(app: App, n: int) -> tuple[dict[str, Any], set[int]]:
    latencies, claimed = [], set()
    for _ in range(n):
        seconds, request = _timed(lambda: app.queue.claim("bench-worker"))
        assert request is not None, "the queue ran dry"
        latencies.append(seconds)
        claimed.add(request.id)
    return {**latency_ms(latencies), "claims_per_second": n / sum(latencies)}, claimed


def _votes(app: App, writers: int, each: int, pending: list[int]) -> dict[str, Any]:
    """``writers`` threads, each casting ``each`` votes on random pending requests as distinct users."""
    latencies: list[list[float]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1)

    def writer(number: int) -> None:
        rng = random.Random(number)
        start.wait()
        try:
            for vote in range(each):
                request_id, user = rng.choice(pending), f"bench-{number}-{vote}"
                began = time.perf_counter()
                app.votes.vote(request_id, user)
                latencies[number].append(time.perf_counter() - began)
        except BaseException as exc:  # re-raised below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    every = [s for per_writer in latencies for s in per_writer]
    return {
        "writers": writers,
        "votes": len(every),
        "votes_per_second": len(every) / wall,
        **latency_ms(every),
    }


def run_on(kind: str, size: str, root: Path) -> dict[str, Any]:
    params = SIZES[size]
    with fresh_database(kind, root / kind) as url:
        app = App.open(Settings(database_url=url, max_page_size=500))
        try:
            load = bulk_load(app, params["requests"], params["votes"])
            pages = [_timed(lambda: app.queue.page(Status.PENDING, 50))[0] for _ in range(params["pages"])]
            top = app.queue.page(Status.PENDING, 50)
            assert len(top) == 50 and all(a.votes >= b.votes for a, b in itertools.pairwise(top))
            claims, claimed = _claims(app, params["claims"])
            pending = [i for i in range(1, params["requests"] + 1) if i not in claimed]
            voting = _votes(app, params["writers"], params["votes_each"], pending)
        finally:
            app.close()
    result: dict[str, Any] = {
        "pending_requests": params["requests"],
        "votes_loaded": params["votes"],
        "load_seconds": load,
        "page_top50": latency_ms(pages),
        "claim": claims,
        "votes_concurrent": voting,
        "target_votes_per_second": target(voting["votes_per_second"], TARGET_VOTES_PER_SECOND, at_most=False),
    }
    if kind == "postgres":
        result["target_claim_p99_ms"] = target(claims["p99_ms"], TARGET_CLAIM_P99_MS)
    return result


def run(size: str, root: Path) -> dict[str, Any]:
    return {kind: run_on(kind, size, root) for kind in ("sqlite", "postgres")}
