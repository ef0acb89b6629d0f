"""The arena's battles on SQLite and PostgreSQL: names hidden until the vote, one vote per battle by its
owner, answers stored once, the daily cap, reveals, continued conversations, static battles from a judged
leaderboard's stored answers, and ratings from the votes.

The models' endpoints are outside services here: ``EchoEndpoint`` is a small honest implementation of the
streaming interface (it answers with what it was asked, in pieces); the real endpoint is tested in
tests/integration/test_arena_endpoints.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from backend.app import App
from backend.arena.battles import battles_of_columns
from backend.arena.config import ArenaConfig, ArenaGeneration, ArenaModel, parse_arena_config
from backend.arena.endpoints import Piece
from backend.arena.ratings import fit_ratings
from backend.errors import (
    BattleNotFound,
    BattleRefused,
    ChatEndpointUnavailable,
    DailyVoteCap,
    InvalidInput,
    NoBattlePossible,
)
from backend.leaderboards.config import load_leaderboard
from backend.services.arena import AnswerEvent, ArenaLimits, ArenaService
from backend.services.arena_static import StaticAnswers
from backend.services.judged_import import JudgedImportService
from backend.serving.client import ChatMessage
from backend.storage.arena import ArenaRepository

from ..judged_data import make_records
from .conftest import Clock

ROSTER = ["org/alpha", "org/beta", "org/gamma"]


def arena_config(models: Sequence[str] = ROSTER, static: str | None = None) -> ArenaConfig:
    data: dict[str, object] = {
        "schema_version": 1,
        "kind": "arena",
        "name": "test_arena",
        "models": [{"name": m, "endpoint": "local"} for m in models],
        "generation": {"max_tokens": 64, "temperature": 0},
        "ratings": {"bootstrap": 20, "seed": 3},
    }
    if static:
        data["static"] = {"judged": static}
    return parse_arena_config(data, "test")


class EchoEndpoint:
    """Answers "<model> heard: <the last user message>" (and how many messages it saw), in three pieces;
    ``fail`` makes the next answers fail as an unreachable endpoint does."""

    def __init__(self) -> None:
        self.fail = 0
        self.seen: list[tuple[str, list[ChatMessage]]] = []
        self.closed = False

    async def stream(
        self, model: ArenaModel, messages: Sequence[ChatMessage], generation: ArenaGeneration
    ) -> AsyncIterator[Piece]:
        self.seen.append((model.name, list(messages)))
        if self.fail:
            self.fail -= 1
            raise ChatEndpointUnavailable("connection refused by http://10.0.0.1:8000/v1")
        text = f"{model.name} heard: {messages[-1].content} ({len(messages)} messages)"
        third = len(text) // 3
        for part in (text[:third], text[third : 2 * third], text[2 * third :]):
            await asyncio.sleep(0)
            yield Piece(text=part)
        yield Piece(finish="stop")

    async def aclose(self) -> None:
        self.closed = True


def service(app: App, clock: Clock, config: ArenaConfig | None = None, **limits: float) -> ArenaService:
    return ArenaService(
        config or arena_config(),
        ArenaRepository(app.db),
        clock,
        streamer=EchoEndpoint(),
        limits=ArenaLimits(**{"ratings_seconds": 0, **limits}),  # type: ignore[arg-type]
        rng=np.random.default_rng(0),
    )


def read(arena: ArenaService, battle: int, user: str, side: str) -> list[AnswerEvent]:
    async def collect() -> list[AnswerEvent]:
        return [event async for event in arena.answer(battle, user, side)]

    return asyncio.run(collect())


def answer_both(arena: ArenaService, battle: int, user: str) -> tuple[str, str]:
    texts = []
    for side in "ab":
        events = read(arena, battle, user, side)
        assert events[-1].done and events[-1].finish == "stop", events
        texts.append("".join(e.delta for e in events))
    return texts[0], texts[1]


def test_a_live_battle_hides_the_names_until_the_one_vote(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    view = arena.start("alice", "10.1.2.3", "What is 2 + 2?")
    assert (view.model_a, view.model_b, view.revealed, view.can_vote) == (None, None, False, False)
    assert view.turns[0].prompt == "What is 2 + 2?" and view.turns[0].answer_a is None

    with pytest.raises(BattleRefused, match="answers-first"):
        arena.vote(view.id, "alice", "model_a")
    answer_a, answer_b = answer_both(arena, view.id, "alice")
    stored = arena.battle(view.id, "alice")
    assert (stored.turns[0].answer_a, stored.turns[0].answer_b) == (answer_a, answer_b)
    assert stored.model_a is None and stored.can_vote
    battle = arena.repository.get(view.id)
    assert battle is not None and battle.model_a != battle.model_b
    assert {battle.model_a, battle.model_b} <= set(ROSTER)
    assert answer_a.startswith(f"{battle.model_a} heard: What is 2 + 2?")  # each side its own model

    # Nobody else sees or votes on it.
    with pytest.raises(BattleNotFound):
        arena.battle(view.id, "mallory")
    with pytest.raises(BattleNotFound):
        arena.vote(view.id, "mallory", "model_b")

    voted = arena.vote(view.id, "alice", "model_b")
    assert (voted.model_a, voted.model_b, voted.winner) == (battle.model_a, battle.model_b, "model_b")
    assert voted.revealed and not voted.can_vote
    with pytest.raises(BattleRefused, match="one-vote"):
        arena.vote(view.id, "alice", "model_a")
    with pytest.raises(InvalidInput, match="winner must be one of"):
        arena.vote(arena.start("alice", None, "hi").id, "alice", "both")

    # A stored answer is replayed, never generated again.
    streamer = arena.streamer
    assert isinstance(streamer, EchoEndpoint)
    asked = len(streamer.seen)
    assert "".join(e.delta for e in read(arena, view.id, "alice", "a")) == answer_a
    assert len(streamer.seen) == asked


def test_votes_after_a_reveal_do_not_count(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    view = arena.start("alice", None, "Name a colour.")
    answer_both(arena, view.id, "alice")
    revealed = arena.reveal(view.id, "alice")
    assert revealed.revealed and revealed.model_a is not None and not revealed.can_vote
    with pytest.raises(BattleRefused, match="hidden-names"):
        arena.vote(view.id, "alice", "tie")
    with pytest.raises(BattleRefused, match="hidden-names"):
        arena.reveal(view.id, "alice")
    assert arena.ratings() is None  # no vote was counted


def test_a_continued_battle_shows_each_model_only_its_own_answers(app: App, clock: Clock) -> None:
    arena = service(app, clock, max_turns=2)
    view = arena.start("alice", None, "First question")
    with pytest.raises(BattleRefused, match="answers-first"):
        arena.continue_battle(view.id, "alice", "too early")
    first_a, first_b = answer_both(arena, view.id, "alice")
    view = arena.continue_battle(view.id, "alice", "Second question")
    assert [t.prompt for t in view.turns] == ["First question", "Second question"] and not view.can_vote
    second_a, _ = answer_both(arena, view.id, "alice")
    assert second_a.endswith("Second question (3 messages)")
    streamer = arena.streamer
    assert isinstance(streamer, EchoEndpoint)
    battle = arena.repository.get(view.id)
    assert battle is not None
    model, messages = streamer.seen[-2]  # side a's second answer
    assert model == battle.model_a
    assert [(m.role, m.content) for m in messages] == [
        ("user", "First question"),
        ("assistant", first_a),
        ("user", "Second question"),
    ]
    assert first_b not in [m.content for m in messages]
    with pytest.raises(BattleRefused, match="max-turns"):
        arena.continue_battle(view.id, "alice", "Third question")
    assert arena.vote(view.id, "alice", "tie (bothbad)").winner == "tie (bothbad)"


def test_the_daily_cap_counts_votes_per_user_and_utc_day(app: App, clock: Clock) -> None:
    arena = service(app, clock, daily_votes=2)

    def voted(user: str) -> int:
        view = arena.start(user, None, "Hello")
        answer_both(arena, view.id, user)
        return arena.vote(view.id, user, "model_a").id

    voted("alice")
    voted("alice")
    voted("bob")  # his own cap
    view = arena.start("alice", None, "Hello")
    answer_both(arena, view.id, "alice")
    with pytest.raises(DailyVoteCap, match="2 arena votes today") as refused:
        arena.vote(view.id, "alice", "model_a")
    assert 0 < refused.value.retry_after_s <= 86400
    assert arena.battle(view.id, "alice").winner is None  # the refused vote left nothing behind
    clock.advance(24 * 3600)
    assert arena.vote(view.id, "alice", "model_a").winner == "model_a"
    assert arena.ratings() is not None and arena.ratings().battles == 4  # type: ignore[union-attr]


def test_a_failed_or_abandoned_answer_can_be_asked_for_again(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    streamer = arena.streamer
    assert isinstance(streamer, EchoEndpoint)
    view = arena.start("alice", None, "Why is the sky blue?")
    streamer.fail = 1
    events = read(arena, view.id, "alice", "a")
    assert events[-1].error is not None and "ask again" in events[-1].error
    assert "10.0.0.1" not in events[-1].error and "org/" not in events[-1].error  # no endpoint, no name
    assert not any(e.done for e in events)

    # A reader that leaves after the first piece releases the answer too.
    async def leave_early() -> str:
        stream = arena.answer(view.id, "alice", "a")
        first = await anext(stream)
        await stream.aclose()
        return first.delta

    assert asyncio.run(leave_early())
    assert arena.battle(view.id, "alice").turns[0].answer_a is None
    answer_both(arena, view.id, "alice")
    assert arena.battle(view.id, "alice").can_vote


def test_an_answer_being_written_is_not_written_twice(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    view = arena.start("alice", None, "Count to three.")

    async def two_readers() -> tuple[list[AnswerEvent], list[AnswerEvent]]:
        first = arena.answer(view.id, "alice", "b")
        head = await anext(first)  # claimed and streaming
        second = [event async for event in arena.answer(view.id, "alice", "b")]
        rest = [event async for event in first]
        return [head, *rest], second

    first, second = asyncio.run(two_readers())
    assert first[-1].done and second == [
        AnswerEvent(error="this answer is being written for another request: reload the battle")
    ]
    # A claim whose process died is taken over once it is older than a generation can take.
    repository = arena.repository
    battle = repository.get(view.id)
    assert battle is not None
    assert repository.claim_answer(view.id, 1, "a", clock(), clock() - timedelta(seconds=600))
    assert not repository.claim_answer(view.id, 1, "a", clock(), clock() - timedelta(seconds=600))
    clock.advance(601)
    assert repository.claim_answer(view.id, 1, "a", clock(), clock() - timedelta(seconds=600))


def test_prompts_and_modes_are_checked(app: App, clock: Clock) -> None:
    arena = service(app, clock, max_prompt_chars=10)
    for prompt, problem in (("", "write a question"), ("   ", "write a question"), ("x" * 11, "over the 10")):
        with pytest.raises(InvalidInput, match=problem):
            arena.start("alice", None, prompt)
    with pytest.raises(InvalidInput, match="NUL"):
        arena.start("alice", None, "a\x00b")
    with pytest.raises(InvalidInput, match="mode must be one of live, static"):
        arena.start("alice", None, "hi", mode="replay")
    with pytest.raises(NoBattlePossible, match="static"):
        arena.start("alice", None, None, mode="static")
    lonely = service(app, clock, arena_config(["org/alone"]))
    with pytest.raises(NoBattlePossible, match="1 model"):
        lonely.start("alice", None, "hi")
    assert lonely.modes() == []


def test_pairs_are_never_a_model_against_itself_and_sides_are_a_coin(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    repository = arena.repository
    pairs = []
    for _ in range(60):
        battle = repository.get(arena.start("alice", None, "hi").id)
        assert battle is not None
        pairs.append((battle.model_a, battle.model_b))
    assert all(a != b for a, b in pairs)
    assert {frozenset(p) for p in pairs} == {frozenset(p) for p in [ROSTER[:2], ROSTER[1:], ROSTER[::2]]}
    on_left = sum(a == "org/alpha" for a, _ in pairs)
    with_alpha = sum("org/alpha" in p for p in pairs)
    assert 0 < on_left < with_alpha


def test_ratings_are_the_fit_of_the_hidden_votes(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    rng = np.random.default_rng(1)
    cast = []
    for _ in range(30):
        view = arena.start("alice", None, "hi")
        answer_both(arena, view.id, "alice")
        winner = ["model_a", "model_b", "tie", "tie (bothbad)"][int(rng.integers(4))]
        voted = arena.vote(view.id, "alice", winner)
        cast.append((voted.model_a, voted.model_b, winner))
    revealed = arena.start("alice", None, "hi")  # revealed without a vote: not counted
    answer_both(arena, revealed.id, "alice")
    arena.reveal(revealed.id, "alice")

    ratings = arena.ratings()
    assert ratings is not None and ratings.battles == 30 and ratings.bootstrap == 20
    columns = ([a for a, _, _ in cast], [b for _, b, _ in cast], [w for _, _, w in cast])
    expected = fit_ratings(battles_of_columns(*columns), bootstrap=20, seed=3)  # type: ignore[arg-type]
    assert ratings.rows() == expected.rows()
    assert sum(m.battles for m in ratings.models) == 60


def test_static_battles_pair_stored_answers_of_a_judged_leaderboard(
    judged_app: App, clock: Clock, tmp_path: Path
) -> None:
    config = load_leaderboard("alpaca_eval_2")
    results = tmp_path / "results"
    for seed, model in ((1, "Model-A-Chat"), (2, "model_b.v2")):
        folder = results / model / "weighted_alpaca_eval_gpt4_turbo"
        folder.mkdir(parents=True)
        (folder / "annotations.json").write_text(json.dumps(make_records(seed, 12, "length_biased", model)))
    JudgedImportService(judged_app.requests, judged_app.evaluations, clock, tmp_path / "work").import_folder(
        config,  # type: ignore[arg-type]
        results,
        None,
    )
    arena = ArenaService(
        arena_config([], static="alpaca_eval_2"),
        ArenaRepository(judged_app.db),
        clock,
        streamer=None,
        static=StaticAnswers(judged_app.leaderboards["alpaca_eval_2"]),
        limits=ArenaLimits(ratings_seconds=0),
        rng=np.random.default_rng(0),
    )
    assert arena.modes() == ["static"]
    with pytest.raises(InvalidInput, match="send no prompt"):
        arena.start("alice", None, "my own question", mode="static")
    with pytest.raises(NoBattlePossible, match="0 model"):
        arena.start("alice", None, "a live question")
    models = {"alpaca_eval/Model-A-Chat", "alpaca_eval/model_b.v2", "gpt4_1106_preview"}
    stored: dict[tuple[str, str], str] = {}  # the first answer to an instruction given twice
    for seed, m in ((1, "Model-A-Chat"), (2, "model_b.v2")):
        for r in make_records(seed, 12, "length_biased", m):
            stored.setdefault((r["instruction"], r["generator_2"]), r["output_2"])
    seen = set()
    for _ in range(12):
        view = arena.start("alice", None, None, mode="static")
        assert view.can_vote and not view.can_continue and view.model_a is None
        voted = arena.vote(view.id, "alice", "model_a")
        assert {voted.model_a, voted.model_b} <= models and voted.model_a != voted.model_b
        seen |= {voted.model_a, voted.model_b}
        turn = voted.turns[0]
        for name, answer in ((voted.model_a, turn.answer_a), (voted.model_b, turn.answer_b)):
            if name != "gpt4_1106_preview":
                assert answer == stored[(turn.prompt, name.split("/")[1])]  # type: ignore[union-attr]
        with pytest.raises(BattleRefused, match="static-battle"):
            arena.continue_battle(view.id, "alice", "and then?")
    assert seen == models
    ratings = arena.ratings()
    assert ratings is not None and {m.model for m in ratings.models} == models


def test_the_table_is_refitted_at_most_every_ratings_seconds_but_at_once_after_the_first_vote(
    app: App, clock: Clock
) -> None:
    arena = service(app, clock, ratings_seconds=3600)

    def voted() -> None:
        view = arena.start("alice", None, "hi")
        answer_both(arena, view.id, "alice")
        arena.vote(view.id, "alice", "tie")

    assert arena.ratings() is None
    voted()
    first = arena.ratings()
    assert first is not None and first.battles == 1  # "no votes yet" is not kept past a vote
    voted()
    assert arena.ratings() is first  # within the hour the last fit is shown
    fresh = service(app, clock, ratings_seconds=0)
    assert fresh.ratings().battles == 2  # type: ignore[union-attr]


def test_a_battle_reads_back_its_own_times_and_each_turns(app: App, clock: Clock) -> None:
    arena = service(app, clock)
    view = arena.start("alice", None, "first")
    answer_both(arena, view.id, "alice")
    clock.advance(60)
    arena.continue_battle(view.id, "alice", "second")
    battle = arena.repository.get(view.id)
    assert battle is not None
    assert battle.created_at == battle.turns[0].created_at == clock() - timedelta(seconds=60)
    assert battle.turns[1].created_at == clock() and [t.number for t in battle.turns] == [1, 2]
