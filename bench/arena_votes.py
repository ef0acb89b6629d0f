"""Arena votes under 200 concurrent voters, on PostgreSQL (target: p99 <= 20 ms) and on SQLite (no target).

Setup bulk-loads one database (Core executemany; not measured): 100,000 battles voted on already (the
history the ratings read) and, for each voter, battles of their own answered and waiting for a vote, with
answers of 1,500 characters (the vote's reply carries the battle back, as the page shows it). What is
measured is ``ArenaService.vote``, one call at a time (time.perf_counter around it), from 200 threads
sharing the app's engine as the web server's threads do:

- with think time: each voter waits an exponential time of mean 1 s before each vote, for a fixed duration.
  A person reads two answers before voting, which takes tens of seconds: 1 s is pessimistic (200 voters
  offer about 200 votes/s; at a vote a minute, the load of 12,000 people voting at once). The voters wait
  for their own vote before thinking again (a closed loop with think time), so a stall offers less load
  meanwhile (coordinated omission); with think times a hundred times the vote's, that hides little.
- closed loop, no think time: every voter votes again as soon as their vote returns. Its votes/s is the
  saturation throughput of this machine (client and server on the same cores); its latencies are queueing,
  and carry no target.

Every vote must be accepted and stored: the figures are checked against the database afterwards.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, text

from backend.app import App
from backend.arena.config import ArenaConfig, parse_arena_config
from backend.services.arena import ArenaLimits, ArenaService
from backend.settings import Settings
from backend.storage.arena import ArenaRepository
from backend.storage.schema import ARENA_WINNERS, arena_battles, arena_turns, arena_voter_days
from bench.databases import fresh_database
from bench.stats import latency_ms, target

SIZES: dict[str, dict[str, Any]] = {
    "full": {"history": 100_000, "voters": 200, "think_s": 1.0, "seconds": 30.0, "closed_each": 25},
    "tiny": {"history": 500, "voters": 20, "think_s": 0.05, "seconds": 1.0, "closed_each": 5},
}
BATCH = 5_000
MODELS = 20
ANSWER_CHARS = 1_500
TARGET_VOTE_P99_MS = 20.0  # on PostgreSQL, with think time
ARENA = "bench_arena"


def arena_config() -> ArenaConfig:
    return parse_arena_config(
        {
            "schema_version": 1,
            "kind": "arena",
            "name": ARENA,
            "models": [{"name": f"org/model-{m:02d}", "endpoint": "local"} for m in range(MODELS)],
        },
        "bench",
    )


def _battle_rows(users: list[str | None], history: int, rng: random.Random) -> Iterator[Any]:
    """(battle row, turn row) of each battle (ids from 1, one per user), a static battle between two random
    models, answered; the first ``history`` voted on already."""
    now = datetime.now(UTC) - timedelta(hours=1)
    answer = ("lorem ipsum " * (ANSWER_CHARS // 12 + 1))[:ANSWER_CHARS]
    for battle_id, user in enumerate(users, start=1):
        voted = battle_id <= history
        a, b = rng.sample(range(MODELS), 2)
        winner = rng.choice(ARENA_WINNERS) if voted else None
        yield (
            {
                "id": battle_id, "arena": ARENA, "mode": "static", "model_a": f"org/model-{a:02d}",
                "model_b": f"org/model-{b:02d}", "user": user, "address": None, "question": f"q:{battle_id}",
                "turns": 1, "created_at": now, "winner": winner, "voted_at": now if voted else None,
                "revealed_at": now if voted else None, "anony": True, "import_key": None,
            },
            {
                "battle_id": battle_id, "turn": 1, "prompt": "Explain the arena in a paragraph.",
                "answer_a": answer, "answer_b": answer[::-1], "finish_a": "stop", "finish_b": "stop",
                "answered_a_at": now, "answered_b_at": now, "created_at": now,
            },
        )  # fmt: skip


def bulk_load(app: App, history: int, owned: dict[str, int]) -> tuple[dict[str, list[int]], float]:
    """``history`` voted battles, then ``owned[user]`` unvoted ones per user: (each user's battles, seconds)."""
    started = time.perf_counter()
    rng = random.Random(0)
    users: list[str | None] = [f"past-{k % 5_000}" for k in range(history)]
    battles: dict[str, list[int]] = {}
    next_id = history + 1
    for user, count in owned.items():
        battles[user] = list(range(next_id, next_id + count))
        users += [user] * count
        next_id += count
    chunk: list[Any] = []
    for row in _battle_rows(users, history, rng):
        chunk.append(row)
        if len(chunk) == BATCH:
            _insert(app, chunk)
            chunk = []
    if chunk:
        _insert(app, chunk)
    with app.db.transaction() as conn:
        if app.db.is_postgres:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('arena_battles', 'id'), :n)"), {"n": next_id - 1}
            )
    with app.db.engine.connect() as conn:  # fresh statistics, as autovacuum would leave them
        conn.execute(text("ANALYZE"))
        conn.commit()
    return battles, time.perf_counter() - started


def _insert(app: App, chunk: list[Any]) -> None:
    with app.db.transaction() as conn:
        conn = conn.execution_options(insertmanyvalues_page_size=1_000)
        conn.execute(insert(arena_battles), [b for b, _ in chunk])
        conn.execute(insert(arena_turns), [t for _, t in chunk])


@dataclass(frozen=True)
class Phase:
    votes: int
    seconds: float
    latencies: list[float]
    connections_opened: int


def voting(arena: ArenaService, battles: dict[str, list[int]], think_s: float, until_s: float) -> Phase:
    """Every voter in a thread of their own votes on their battles in turn: after an exponential think time
    of mean ``think_s`` (none when 0), until ``until_s`` seconds have passed or their battles run out."""
    latencies: list[list[float]] = [[] for _ in battles]
    errors: list[BaseException] = []
    start = threading.Barrier(len(battles) + 1)
    opened = [0]
    pool = arena.repository.db.engine.pool

    def connected(*_: Any) -> None:
        opened[0] += 1

    def voter(number: int, user: str, own: list[int]) -> None:
        rng = random.Random(number)
        start.wait()
        deadline = time.perf_counter() + until_s
        try:
            for battle in own:
                if think_s:
                    pause = rng.expovariate(1 / think_s)
                    if time.perf_counter() + pause >= deadline:
                        return
                    time.sleep(pause)
                elif time.perf_counter() >= deadline:
                    return
                winner = rng.choice(ARENA_WINNERS)
                began = time.perf_counter()
                arena.vote(battle, user, winner)
                latencies[number].append(time.perf_counter() - began)
        except BaseException as exc:  # re-raised below, in the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=voter, args=(n, user, own)) for n, (user, own) in enumerate(battles.items())
    ]
    event.listen(pool, "connect", connected)
    try:
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
    finally:
        event.remove(pool, "connect", connected)
    if errors:
        raise errors[0]
    every = [s for per_voter in latencies for s in per_voter]
    return Phase(len(every), seconds, every, opened[0])


def _stored_votes(app: App, users: list[str]) -> tuple[int, int]:
    """(battles of ``users`` with a winner, their day counters summed), read back from the database."""
    with app.db.transaction() as conn:
        voted = conn.execute(
            select(func.count()).where(arena_battles.c.user.in_(users), arena_battles.c.winner.is_not(None))
        ).scalar_one()
        counted = conn.execute(
            select(func.coalesce(func.sum(arena_voter_days.c.votes), 0)).where(
                arena_voter_days.c.voter.in_(users)
            )
        ).scalar_one()
    return int(voted), int(counted)


def _figures(phase: Phase, voters: int) -> dict[str, Any]:
    return {
        "voters": voters,
        "votes": phase.votes,
        "seconds": phase.seconds,
        "achieved_votes_per_second": phase.votes / phase.seconds,
        "connections_opened": phase.connections_opened,
        **latency_ms(phase.latencies),
    }


def run_on(kind: str, size: str, root: Path) -> dict[str, Any]:
    params = SIZES[size]
    voters, think_s, seconds = params["voters"], params["think_s"], params["seconds"]
    # Enough battles that no voter runs out: twice the votes the mean think time allows, and 20 more.
    think_each = int(2 * seconds / think_s) + 20
    thinking = {f"reader-{n:03d}": think_each for n in range(voters)}
    closed = {f"clicker-{n:03d}": params["closed_each"] for n in range(voters)}
    with fresh_database(kind, root / kind) as url:
        app = App.open(Settings(database_url=url))
        try:
            battles, load = bulk_load(app, params["history"], {**thinking, **closed})
            arena = ArenaService(
                arena_config(),
                ArenaRepository(app.db),
                lambda: datetime.now(UTC),
                streamer=None,
                limits=ArenaLimits(daily_votes=max(think_each, params["closed_each"])),
            )
            gc.collect()  # what earlier benches of this process left is not the server's to scan
            with_think = voting(arena, {u: battles[u] for u in thinking}, think_s, seconds)
            no_think = voting(arena, {u: battles[u] for u in closed}, 0.0, float("inf"))
            for phase, users in ((with_think, list(thinking)), (no_think, list(closed))):
                stored = _stored_votes(app, users)
                assert stored == (phase.votes, phase.votes), f"{phase.votes} votes returned, stored {stored}"
        finally:
            app.close()
    think = {
        **_figures(with_think, voters),
        "think_mean_seconds": think_s,
        "offered_votes_per_second": voters / think_s,
    }
    result: dict[str, Any] = {
        "battles_loaded": params["history"] + sum(thinking.values()) + sum(closed.values()),
        "load_seconds": load,
        "with_think_time": think,
        "closed_loop_saturation": _figures(no_think, voters),
    }
    if kind == "postgres":
        result["target_vote_p99_ms"] = target(think["p99_ms"], TARGET_VOTE_P99_MS)
    return result


def run(size: str, root: Path) -> dict[str, Any]:
    return {kind: run_on(kind, size, root) for kind in ("sqlite", "postgres")}
