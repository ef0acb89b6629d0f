"""The arena's models answer through real endpoints: our model endpoint in this process (``endpoint: local``)
and the same app behind a real HTTP server with a key (what a vLLM server looks like to the arena). A battle
streams both answers, stores them whole, and takes its vote; a failing endpoint is an error event that names
neither the model nor the endpoint, and the answer can be asked for again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backend.app import App
from backend.arena.config import parse_arena_config
from backend.arena.endpoints import ArenaEndpoints
from backend.errors import ConfigurationError
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.services.arena import AnswerEvent, ArenaLimits, ArenaService
from backend.serving.client import ChatClient, ChatMessage
from backend.serving.server import serving_app
from backend.settings import Settings
from backend.storage.arena import ArenaRepository

from ..serving import Flaky, live
from .conftest import Clock

KEY = "arena-test-key-0123456789"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    store = LocalModelStore(tmp_path_factory.mktemp("arena-store"))
    build_tiny_model(store, "arena/left")
    build_tiny_model(store, "arena/right", seed=5)
    return store


@pytest.fixture
def remote(store: LocalModelStore) -> Iterator[str]:
    """The model endpoint behind a real HTTP server that wants a key: its /v1 base URL."""
    app, _ = serving_app(Settings(model_store=store.root, serve_api_key=KEY))
    with live(app) as base:
        yield f"{base}/v1"


def config(remote_url: str) -> dict[str, object]:
    return {
        "schema_version": 1,
        "kind": "arena",
        "name": "real",
        "models": [
            {"name": "arena/left", "endpoint": "local"},
            {
                "name": "right-remote",
                "endpoint": remote_url,
                "model": "arena/right",
                "api_key_env": "ARENA_KEY",
            },
        ],
        "generation": {"max_tokens": 12, "temperature": 0},
    }


def collect(arena: ArenaService, battle: int, side: str) -> list[AnswerEvent]:
    async def read() -> list[AnswerEvent]:
        try:
            return [event async for event in arena.answer(battle, "alice", side)]
        finally:
            assert arena.streamer is not None
            await arena.streamer.aclose()  # this event loop ends here

    return asyncio.run(read())


def test_a_battle_streams_from_the_local_and_a_remote_endpoint(
    app: App, clock: Clock, store: LocalModelStore, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARENA_KEY", KEY)
    arena_config = parse_arena_config(config(remote), "real.yaml")
    settings = Settings(model_store=store.root)
    arena = ArenaService(
        arena_config,
        ArenaRepository(app.db),
        clock,
        streamer=ArenaEndpoints(arena_config, settings),
        limits=ArenaLimits(ratings_seconds=0),
        rng=np.random.default_rng(0),
    )
    view = arena.start("alice", "127.0.0.1", "Tell me about trains.")
    battle = arena.repository.get(view.id)
    assert battle is not None
    answers = {}
    for side in "ab":
        events = collect(arena, view.id, side)
        assert events[-1].done and events[-1].finish in ("stop", "length"), events
        assert len(events) > 2  # streamed in pieces, not one block
        answers[battle.model(side)] = "".join(e.delta for e in events)

    # Each side's text is its model's own greedy answer, as the endpoint gives it without streaming.
    with ChatClient(remote, api_key=KEY) as client:
        for name, repo in (("arena/left", "arena/left"), ("right-remote", "arena/right")):
            expected = client.chat(repo, [ChatMessage("user", "Tell me about trains.")], max_tokens=12).text
            assert answers[name] == expected
    assert answers["arena/left"] != answers["right-remote"]

    voted = arena.vote(view.id, "alice", "model_a")
    assert {voted.model_a, voted.model_b} == {"arena/left", "right-remote"}


def test_a_failing_endpoint_is_an_error_to_ask_again(
    app: App, clock: Clock, store: LocalModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARENA_KEY", KEY)
    serving, _ = serving_app(Settings(model_store=store.root, serve_api_key=KEY))
    with live(Flaky(serving, failures=None, status=503)) as base:
        arena_config = parse_arena_config(config(f"{base}/v1"), "real.yaml")
        arena = ArenaService(
            arena_config,
            ArenaRepository(app.db),
            clock,
            streamer=ArenaEndpoints(arena_config, Settings(model_store=store.root)),
            rng=np.random.default_rng(1),
        )
        view = arena.start("alice", None, "Hello?")
        battle = arena.repository.get(view.id)
        assert battle is not None
        side = "a" if battle.model_a == "right-remote" else "b"
        events = collect(arena, view.id, side)
    assert [e.error for e in events] == [f"the model on side {side.upper()} could not answer now: ask again"]
    assert getattr(arena.battle(view.id, "alice").turns[0], f"answer_{side}") is None
    repository = arena.repository
    assert repository.claim_answer(view.id, 1, side, clock(), clock())  # released: it can be asked again


def test_endpoints_are_checked_when_the_arena_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arena_config = parse_arena_config(config("http://127.0.0.1:9/v1"), "real.yaml")
    monkeypatch.delenv("ARENA_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ARENA_KEY, which is not set"):
        ArenaEndpoints(arena_config, Settings(model_store=tmp_path))
    monkeypatch.setenv("ARENA_KEY", "k")
    with pytest.raises(ConfigurationError, match="set it to the model store"):
        ArenaEndpoints(arena_config, Settings(model_store=None))
