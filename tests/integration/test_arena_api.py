"""The arena's HTTP API on SQLite and PostgreSQL, over create_api (the same app `leaderboard serve` runs):
a battle from start to vote, the answers streamed as server-sent events, names hidden until the vote, one
vote, someone else's battle a 404, limits per client address, no arena a 404, every error in the one shape,
and the routes in the OpenAPI spec (schemathesis fuzzes them here, in process).

The models' endpoint is EchoEndpoint, the honest fake of test_arena_service; the browser test
(tests/acceptance/test_browser_arena.py) battles real tiny models through the real endpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.api.routes_arena import INTERNAL_ERROR
from backend.app import App
from backend.arena.config import ArenaConfig
from backend.errors import ConfigurationError, LeaderboardConfigError
from backend.services.arena import ArenaLimits, ArenaService
from backend.settings import Settings
from backend.storage.arena import ArenaRepository
from backend.storage.tokens import TokenRepository

from .conftest import Clock
from .test_arena_service import ROSTER, EchoEndpoint, arena_config

BATTLES_PER_MINUTE = 4
VOTES_PER_MINUTE = 3


def with_arena(app: App, clock: Clock, config: ArenaConfig | None = None) -> ArenaService:
    """``app`` serving an arena of EchoEndpoint models (what App.arena builds from LEADERBOARD_ARENA)."""
    arena = ArenaService(
        config or arena_config(),
        ArenaRepository(app.db),
        clock,
        streamer=EchoEndpoint(),
        limits=ArenaLimits(ratings_seconds=0, max_turns=2),
        rng=np.random.default_rng(0),
    )
    app.arena = arena  # type: ignore[misc]
    return arena


@pytest.fixture
def app(database_url: str, clock: Clock) -> Iterator[App]:
    application = App.open(Settings(database_url=database_url, api_hub_auth=False))  # API tokens only
    application.clock = clock
    yield application
    application.close()


@pytest.fixture
def arena(app: App, clock: Clock) -> ArenaService:
    return with_arena(app, clock)


@pytest.fixture
def client(app: App, arena: ArenaService) -> Iterator[TestClient]:
    with TestClient(create_api(app)) as http:
        yield http


def token(app: App, user: str) -> dict[str, str]:
    _, secret = TokenRepository(app.db).create(user, False, "admin", app.clock())
    return {"Authorization": f"Bearer {secret}"}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "status"} <= set(error), error
    assert (error["status"], error["code"]) == (status, code), error
    assert error["message"] and "Traceback" not in error["message"]
    return error


def events(client: TestClient, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The `data:` of each server-sent event of an answer."""
    with client.stream("POST", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        text = "".join(response.iter_text())
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), text
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


def answer(client: TestClient, battle: int, side: str, headers: dict[str, str], pieces: int = 3) -> str:
    """The text of an answer (``pieces``: how many deltas it comes in; a stored answer comes whole)."""
    got = events(client, f"/api/arena/battles/{battle}/answers/{side}", headers)
    assert got[-1] == {"done": True, "finish_reason": "stop"}, got
    assert len(got) == pieces + 1 and all(set(e) == {"delta"} for e in got[:-1])
    return "".join(e["delta"] for e in got[:-1])


def test_a_battle_from_prompt_to_vote_hides_the_names_until_the_one_vote(
    client: TestClient, app: App, arena: ArenaService
) -> None:
    alice = token(app, "alice")
    started = client.post("/api/arena/battles", json={"prompt": "What is 2 + 2?"}, headers=alice)
    assert started.status_code == 201, started.text
    battle = started.json()
    assert battle["model_a"] is None and battle["model_b"] is None and not battle["can_vote"]
    assert not any(name in started.text for name in ROSTER)  # nothing says who is where
    assert battle["turns"] == [{"number": 1, "prompt": "What is 2 + 2?", "answer_a": None, "answer_b": None}]
    path = f"/api/arena/battles/{battle['id']}"
    error_of(client.post(f"{path}/vote", json={"winner": "model_a"}, headers=alice), 409, "battle_refused")

    text_a, text_b = (answer(client, battle["id"], side, alice) for side in "ab")
    shown = client.get(path, headers=alice).json()
    assert shown["can_vote"] and shown["model_a"] is None
    assert (shown["turns"][0]["answer_a"], shown["turns"][0]["answer_b"]) == (text_a, text_b)
    assert answer(client, battle["id"], "a", alice, pieces=1) == text_a  # a stored answer: sent whole

    # Someone else's battle is not found; without a token nobody is let in.
    mallory = token(app, "mallory")
    for method, route, body in (
        ("GET", path, None),
        ("POST", f"{path}/vote", {"winner": "model_b"}),
        ("POST", f"{path}/turns", {"prompt": "mine now"}),
        ("POST", f"{path}/reveal", None),
        ("POST", f"{path}/answers/a", None),
    ):
        error_of(client.request(method, route, json=body, headers=mallory), 404, "battle_not_found")
        error_of(client.request(method, route, json=body), 401, "unauthorized")
    error_of(client.post("/api/arena/battles", json={"prompt": "hi"}), 401, "unauthorized")
    bad = client.post(f"{path}/vote", json={"winner": "both"}, headers=alice)
    assert "winner" in error_of(bad, 422, "invalid_input")["message"]
    error_of(client.post(f"{path}/answers/c", headers=alice), 422, "invalid_input")
    error_of(client.post("/api/arena/battles", json={"prompt": "  "}, headers=alice), 422, "invalid_input")
    error_of(
        client.post("/api/arena/battles", json={"prompt": "hi", "x": 1}, headers=alice), 422, "invalid_input"
    )

    voted = client.post(f"{path}/vote", json={"winner": "model_b"}, headers=alice)
    assert voted.status_code == 200, voted.text
    view = voted.json()
    stored = arena.repository.get(battle["id"])
    assert stored is not None
    assert (view["model_a"], view["model_b"], view["winner"]) == (stored.model_a, stored.model_b, "model_b")
    assert {view["model_a"], view["model_b"]} <= set(ROSTER) and view["model_a"] != view["model_b"]
    assert text_a.startswith(f"{view['model_a']} heard:") and text_b.startswith(f"{view['model_b']} heard:")
    again = error_of(
        client.post(f"{path}/vote", json={"winner": "model_a"}, headers=alice), 409, "battle_refused"
    )
    assert again["rule"] == "one-vote" and again["fix"] == "start a new battle"

    ratings = client.get("/api/arena/ratings").json()
    assert ratings["votes"] == 1 and ratings["arena"] == "test_arena"
    assert [r["model"] for r in ratings["rows"]] == [view["model_b"], view["model_a"]]
    assert set(ratings["rows"][0]) == {"rank", "model", "rating", "rating_lower", "rating_upper", "battles"}
    assert ratings["warnings"]  # one vote: a model that never lost, which the table must say


def test_a_conversation_continues_a_turn_at_a_time_and_a_reveal_takes_no_vote(
    client: TestClient, app: App
) -> None:
    bob = token(app, "bob")
    battle = client.post("/api/arena/battles", json={"prompt": "First"}, headers=bob).json()
    path = f"/api/arena/battles/{battle['id']}"
    refused = error_of(
        client.post(f"{path}/turns", json={"prompt": "Too early"}, headers=bob), 409, "battle_refused"
    )
    assert refused["rule"] == "answers-first"
    for side in "ab":
        answer(client, battle["id"], side, bob)
    continued = client.post(f"{path}/turns", json={"prompt": "Second"}, headers=bob)
    assert continued.status_code == 200, continued.text
    assert [t["prompt"] for t in continued.json()["turns"]] == ["First", "Second"]
    assert answer(client, battle["id"], "a", bob).endswith("Second (3 messages)")
    answer(client, battle["id"], "b", bob)
    assert not client.get(path, headers=bob).json()["can_continue"]  # max_turns=2
    revealed = client.post(f"{path}/reveal", headers=bob).json()
    assert revealed["revealed"] and revealed["model_a"] in ROSTER and revealed["winner"] is None
    refused = error_of(
        client.post(f"{path}/vote", json={"winner": "tie"}, headers=bob), 409, "battle_refused"
    )
    assert refused["rule"] == "hidden-names"
    assert client.get("/api/arena/ratings").json() == {
        "arena": "test_arena",
        "votes": 0,
        "bootstrap": 20,
        "rows": [],
        "warnings": [],
    }


def test_a_failed_answer_is_an_error_event_that_names_no_model_and_can_be_asked_again(
    client: TestClient, app: App, arena: ArenaService, caplog: pytest.LogCaptureFixture
) -> None:
    carol = token(app, "carol")
    battle = client.post("/api/arena/battles", json={"prompt": "Why?"}, headers=carol).json()
    streamer = arena.streamer
    assert isinstance(streamer, EchoEndpoint)
    streamer.fail = 1
    got = events(client, f"/api/arena/battles/{battle['id']}/answers/a", carol)
    assert len(got) == 1 and got[0]["error"]["code"] == "answer_failed", got
    assert "ask again" in got[0]["error"]["message"]
    assert not any(name in json.dumps(got) for name in ROSTER) and "10.0.0.1" not in json.dumps(got)
    assert answer(client, battle["id"], "a", carol)

    # An endpoint that breaks unexpectedly: the stream says so without detail, the server logs it once.
    def broken(*_: object) -> Any:
        raise RuntimeError("boom in /srv/models/secret")

    streamer.stream = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="backend.api.routes_arena"):
        got = events(client, f"/api/arena/battles/{battle['id']}/answers/b", carol)
    assert got == [{"error": {"code": "internal_error", "message": INTERNAL_ERROR}}]
    logged = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert logged == ["boom in /srv/models/secret"]


@pytest.fixture
def limited(database_url: str, clock: Clock) -> Iterator[tuple[App, TestClient]]:
    """An arena whose address may start BATTLES_PER_MINUTE battles and cast VOTES_PER_MINUTE votes."""
    settings = Settings(
        database_url=database_url,
        arena_battles_per_minute=BATTLES_PER_MINUTE,
        arena_votes_per_minute=VOTES_PER_MINUTE,
    )
    with App.open(settings) as application:
        application.clock = clock
        with_arena(application, clock)
        with TestClient(create_api(application)) as http:
            yield application, http


def test_limits_count_per_client_address_whoever_signs_in_and_whatever_headers_say(
    limited: tuple[App, TestClient],
) -> None:
    app, client = limited
    users = [token(app, f"user{i}") for i in range(BATTLES_PER_MINUTE + 1)]
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    battles = []
    for headers in users[:BATTLES_PER_MINUTE]:
        started = client.post("/api/arena/battles", json={"prompt": "hi"}, headers={**headers, **forwarded})
        assert started.status_code == 201, started.text
        battles.append((started.json()["id"], headers))
    limited = client.post("/api/arena/battles", json={"prompt": "hi"}, headers={**users[-1], **forwarded})
    error = error_of(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60 and "arena battle" in error["message"]
    battle, headers = battles[0]
    for side in "ab":
        answer(client, battle, side, headers)  # reading answers is not limited
    error_of(
        client.post(f"/api/arena/battles/{battle}/turns", json={"prompt": "more"}, headers=headers),
        429,
        "rate_limited",
    )

    for battle, headers in battles[1:]:
        for side in "ab":
            answer(client, battle, side, headers)
    for battle, headers in battles[:VOTES_PER_MINUTE]:
        assert (
            client.post(
                f"/api/arena/battles/{battle}/vote", json={"winner": "tie"}, headers=headers
            ).status_code
            == 200
        )
    battle, headers = battles[VOTES_PER_MINUTE]
    limited = client.post(f"/api/arena/battles/{battle}/vote", json={"winner": "tie"}, headers=headers)
    error_of(limited, 429, "rate_limited")
    assert "Retry-After" in limited.headers


def test_without_an_arena_every_arena_route_is_a_404_once_the_caller_is_known(database_url: str) -> None:
    with App.open(Settings(database_url=database_url)) as app, TestClient(create_api(app)) as client:
        user = token(app, "dave")
        spec = client.get("/openapi.json").json()
        routes = [
            (m.upper(), p) for p, item in spec["paths"].items() if p.startswith("/api/arena") for m in item
        ]
        assert len(routes) == 8
        for method, route in routes:
            path = route.replace("{battle_id}", "1").replace("{side}", "a")
            if route.startswith("/api/arena/battles"):  # a write: who calls is checked first
                error_of(client.request(method, path, json={}), 401, "unauthorized")
            error = error_of(client.request(method, path, json={}, headers=user), 404, "arena_not_configured")
            assert "LEADERBOARD_ARENA" in error["message"]


def test_the_spec_documents_the_arena_routes_and_their_one_error_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {
        ("get", "/api/arena"),
        ("get", "/api/arena/ratings"),
        ("post", "/api/arena/battles"),
        ("get", "/api/arena/battles/{battle_id}"),
        ("post", "/api/arena/battles/{battle_id}/turns"),
        ("post", "/api/arena/battles/{battle_id}/answers/{side}"),
        ("post", "/api/arena/battles/{battle_id}/vote"),
        ("post", "/api/arena/battles/{battle_id}/reveal"),
    } == {(m, p) for p, item in paths.items() if p.startswith("/api/arena") for m in item}
    assert not any(p.startswith("/arena") for p in paths)  # the page's routes are not the API
    stream = paths["/api/arena/battles/{battle_id}/answers/{side}"]["post"]["responses"]
    item = stream["200"]["content"]["text/event-stream"]["itemSchema"]
    events_schema = item["properties"]["data"]["contentSchema"]["anyOf"]
    assert [e["$ref"].rsplit("/", 1)[1] for e in events_schema] == [
        "AnswerDelta",
        "AnswerDone",
        "AnswerFailed",
    ]
    for path, item in paths.items():
        if path.startswith("/api/arena"):
            for method, operation in item.items():
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")):
                        assert set(response["content"]) == {"application/json"}, (method, path, status)
                        assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                            "/ErrorBody"
                        )
    vote = spec["components"]["schemas"]["VoteIn"]["properties"]["winner"]
    assert vote["enum"] == ["model_a", "model_b", "tie", "tie (bothbad)"]


# schemathesis over the arena's operations, in process: every response conforms to the spec, none is a 5xx.
# A prompt of spaces, a vote before the answers or a second one are refused by design (422, 409); a prompt
# over the limit in characters may be over LEADERBOARD_API_MAX_BODY_BYTES in bytes first (413).
FUZZ = schemathesis.config.SchemathesisConfig.from_str(
    """
[[operations]]
include-path-regex = "^/api/arena/battles"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
checks.negative_data_rejection.expected-statuses = [
  "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"""
)


@pytest.fixture
def arena_api(app: App, arena: ArenaService) -> Iterator[tuple[Any, dict[str, str]]]:
    api = create_api(app)
    with TestClient(api):  # its lifespan
        yield api, token(app, "fuzzer")


@pytest.fixture
def arena_schema(arena_api: tuple[Any, dict[str, str]]) -> schemathesis.BaseSchema:
    api, _ = arena_api
    return schemathesis.openapi.from_asgi("/openapi.json", api, config=FUZZ)


fuzzed = schemathesis.pytest.from_fixture("arena_schema").include(path_regex="^/api/arena")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@fuzzed.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_arena_operation_conforms_to_the_spec(
    case: schemathesis.Case, arena_api: tuple[Any, dict[str, str]]
) -> None:
    _, headers = arena_api
    case.call_and_validate(headers=headers)


def test_the_server_closes_the_arenas_endpoints_after_its_background_services_stop(
    app: App, arena: ArenaService
) -> None:
    streamer = arena.streamer
    assert isinstance(streamer, EchoEndpoint)
    seen: list[tuple[str, bool]] = []

    class Scheduler:
        def start(self) -> None:
            seen.append(("start", streamer.closed))

        def shutdown(self) -> None:
            seen.append(("shutdown", streamer.closed))

    with TestClient(create_api(app, [Scheduler()])) as client:
        assert client.get("/api/arena").status_code == 200
        assert not streamer.closed
    assert seen == [("start", False), ("shutdown", False)] and streamer.closed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bad_arena_setting_stops_the_server_at_its_start(database_url: str, tmp_path: Path) -> None:
    local = tmp_path / "local_arena.yaml"
    local.write_text(
        "schema_version: 1\nkind: arena\nname: local_arena\nmodels:\n"
        "  - {name: org/a, endpoint: local}\n  - {name: org/b, endpoint: local}\n"
    )
    for arena, refused in (
        ("no_such_arena", LeaderboardConfigError),
        ("open_llm_v2", LeaderboardConfigError),  # a leaderboard, not an arena
        (str(local), ConfigurationError),  # local models, and no LEADERBOARD_MODEL_STORE to serve them
    ):
        with App.open(Settings(database_url=database_url, arena=arena)) as app, pytest.raises(refused):
            create_api(app)
