"""200 voters at once on the arena, on SQLite and PostgreSQL: every accepted vote is stored exactly once, a
battle takes one vote however many tabs race for it, and the daily cap holds however many race past it.

Threads in one process share the app's engine, as the web server's do: on PostgreSQL 200 threads wait for
its 15 connections, on SQLite (WAL) writers queue on the database lock. Neither may fail a vote.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from backend.app import App
from backend.arena.config import ArenaConfig, parse_arena_config
from backend.errors import BattleRefused, DailyVoteCap
from backend.services.arena import ArenaLimits, ArenaService
from backend.storage.arena import ArenaRepository, NewBattle
from backend.storage.schema import ARENA_WINNERS, arena_battles, arena_voter_days

from .conftest import Clock

VOTERS = 200
CAP = 3
MODELS = ("org/alpha", "org/beta", "org/gamma", "org/delta")
BARRIER_TIMEOUT_S = 60.0


def arena_config() -> ArenaConfig:
    return parse_arena_config(
        {
            "schema_version": 1,
            "kind": "arena",
            "name": "race_arena",
            "models": [{"name": m, "endpoint": "local"} for m in MODELS],
            "ratings": {"bootstrap": 0, "seed": 0},
        },
        "test",
    )


@dataclass
class Voter:
    """One person's battles and the tabs (threads) they vote from; ``twice`` is a battle two tabs vote on."""

    name: str
    kind: str  # plain, duplicate (two tabs race on one battle), over_cap (three tabs race past the cap)
    battles: list[int] = field(default_factory=list)
    tabs: list[list[int]] = field(default_factory=list)
    twice: int | None = None


def _voters(repository: ArenaRepository, clock: Clock) -> list[Voter]:
    """Plain voters own 2 battles (one tab); duplicate voters 2, the first voted on from two tabs at once;
    over-cap voters CAP + 3, voted on from three tabs at once (only CAP may count)."""
    voters = []
    for n in range(VOTERS):
        kind = ("plain", "plain", "plain", "duplicate", "over_cap")[n % 5]
        voter = Voter(f"voter-{n:03d}", kind)
        for b in range(CAP + 3 if kind == "over_cap" else 2):
            model_a, model_b = MODELS[(n + b) % 4], MODELS[(n + b + 1 + b % 3) % 4]
            new = NewBattle(
                "race_arena", "static", model_a, model_b, voter.name, None, f"q:{n}:{b}", "Say hello.",
                answers=("Hello.", "Hi!"), finishes=("stop", "stop"),
            )  # fmt: skip
            voter.battles.append(repository.create(new, clock()))
        if kind == "over_cap":
            voter.tabs = [voter.battles[t::3] for t in range(3)]
        elif kind == "duplicate":
            voter.twice = voter.battles[0]
            voter.tabs = [list(voter.battles), [voter.twice]]
        else:
            voter.tabs = [list(voter.battles)]
        voters.append(voter)
    return voters


def test_two_hundred_concurrent_voters_have_every_vote_counted_once(app: App, clock: Clock) -> None:
    repository = ArenaRepository(app.db)
    arena = ArenaService(
        arena_config(),
        repository,
        clock,
        streamer=None,
        limits=ArenaLimits(daily_votes=CAP, ratings_seconds=0),
        rng=np.random.default_rng(0),
    )
    voters = _voters(repository, clock)
    tabs = [(voter, battles) for voter in voters for battles in voter.tabs]
    start = threading.Barrier(len(tabs))
    # The two tabs of a duplicate voter meet again right before their votes on the same battle.
    pairs = {v.name: threading.Barrier(2) for v in voters if v.kind == "duplicate"}
    outcomes: list[tuple[str, int, str, str]] = []  # (voter, battle, winner sent, "ok" or refusal rule)
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def tab(voter: Voter, battles: list[int]) -> None:
        rng = np.random.default_rng([battles[0], len(battles)])
        try:
            start.wait(BARRIER_TIMEOUT_S)
            for battle in battles:
                winner = ARENA_WINNERS[int(rng.integers(len(ARENA_WINNERS)))]
                if battle == voter.twice:
                    pairs[voter.name].wait(BARRIER_TIMEOUT_S)
                try:
                    view = arena.vote(battle, voter.name, winner)
                    assert view.winner == winner and view.revealed and view.model_a is not None
                    outcome = "ok"
                except BattleRefused as exc:
                    outcome = exc.rule
                except DailyVoteCap:
                    outcome = "daily-cap"
                with lock:
                    outcomes.append((voter.name, battle, winner, outcome))
        except BaseException as exc:  # "database is locked", a pool timeout: reported below
            with lock:
                unexpected.append(exc)

    threads = [threading.Thread(target=tab, args=pair) for pair in tabs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not unexpected, unexpected[:3]
    assert len(outcomes) == sum(len(battles) for _, battles in tabs)

    accepted = [(voter, battle, winner) for voter, battle, winner, outcome in outcomes if outcome == "ok"]
    with app.db.transaction() as conn:
        stored = dict(
            conn.execute(
                select(arena_battles.c.id, arena_battles.c.winner).where(arena_battles.c.winner.is_not(None))
            ).all()
        )
        days = {
            voter: (day, votes)
            for voter, day, votes in conn.execute(
                select(arena_voter_days.c.voter, arena_voter_days.c.day, arena_voter_days.c.votes)
            )
        }
    # Every accepted call is exactly one stored winner, the one it sent; nothing else is stored.
    assert len({battle for _, battle, _ in accepted}) == len(accepted)
    assert stored == {battle: winner for _, battle, winner in accepted}

    by_voter = {v.name: v for v in voters}
    counted = Counter(voter for voter, _, _ in accepted)
    for voter in voters:
        mine = [(battle, outcome) for name, battle, _, outcome in outcomes if name == voter.name]
        if voter.kind == "duplicate":
            raced = sorted(outcome for battle, outcome in mine if battle == voter.twice)
            assert raced == ["ok", "one-vote"], (voter.name, mine)
            assert counted[voter.name] == 2
        elif voter.kind == "over_cap":
            assert Counter(outcome for _, outcome in mine) == {"ok": CAP, "daily-cap": 3}, (voter.name, mine)
        else:
            assert counted[voter.name] == 2 and all(outcome == "ok" for _, outcome in mine)
        # The day's counter is the voter's accepted votes, never past the cap.
        assert days[voter.name] == ("2026-01-01", counted[voter.name]), voter.name
        assert counted[voter.name] <= CAP
    assert days.keys() == by_voter.keys()
    assert len(accepted) == 120 * 2 + 40 * 2 + 40 * CAP

    ratings = arena.ratings()
    assert ratings is not None
    assert ratings.battles == len(accepted)
    assert sum(m.battles for m in ratings.models) == 2 * len(accepted)
