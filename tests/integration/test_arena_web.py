"""The arena page on SQLite and PostgreSQL: the ratings for everyone, a battle for the signed-in, and the
page's JSON routes (the API's battle operations with the session cookie and its CSRF token in a header).
The browser test (tests/acceptance/test_browser_arena.py) plays the page's script in Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import numpy as np
import pytest
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.app import App
from backend.services.arena import ArenaLimits, ArenaService
from backend.services.arena_static import StaticPool, StaticQuestion
from backend.settings import Settings
from backend.storage.arena import ArenaRepository
from backend.web.view import CSP

from .conftest import Clock
from .test_arena_api import ROSTER, arena_config, error_of, events, with_arena
from .test_web_pages import csrf_of, sign_in, token_for


@pytest.fixture
def app(database_url: str, clock: Clock) -> Iterator[App]:
    application = App.open(Settings(database_url=database_url))
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


def signed_in(app: App, client: TestClient, user: str) -> dict[str, str]:
    """Sign ``user`` in on ``client`` (its cookie jar); the header their page's script sends."""
    _, token = token_for(app, user)
    assert sign_in(client, token).status_code == 303
    return {"X-CSRF-Token": csrf_of(client.get("/queue").text)}


def ratings_rows(html: str) -> list[list[str]]:
    table = re.search(r'<table class="ratings">(.*?)</table>', html, re.S)
    if table is None:
        return []
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]
    return [
        [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


def test_everyone_sees_the_ratings_and_a_link_to_sign_in_to_battle(client: TestClient) -> None:
    page = client.get("/arena")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    html = page.text
    assert 'href="/arena"' in html  # the nav link
    assert '<a href="/signin">Sign in to battle</a>' in html
    assert 'id="arena"' not in html and "arena.js" not in html  # no battle, no script, for the anonymous
    assert "No votes yet" in html and ratings_rows(html) == []
    assert 'href="/arena"' in client.get("/").text  # every page links it


def test_a_signed_in_battle_through_the_pages_routes_and_the_ratings_after_the_vote(
    client: TestClient, app: App, arena: ArenaService
) -> None:
    csrf = signed_in(app, client, "alice")
    page = client.get("/arena").text
    assert re.search(
        rf'<section id="arena" class="arena" data-csrf="{re.escape(csrf["X-CSRF-Token"])}" hidden>', page
    )
    assert '<script src="/static/arena.js" defer></script>' in page
    assert 'maxlength="8000"' in page and 'id="arena-static"' not in page  # live battles only here
    buttons = re.findall(r'<button type="button" data-winner="([^"]+)" disabled>([^<]+)</button>', page)
    assert [(unescape(w), label) for w, label in buttons] == [
        ("model_a", "A is better"),
        ("model_b", "B is better"),
        ("tie", "Tie"),
        ("tie (bothbad)", "Both are bad"),
    ]
    assert (
        client.get("/static/arena.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )

    # Every POST needs the session's CSRF token in its header; a page without a session is refused first.
    body = {"prompt": "<script>window.__pwned=1</script> Hello?"}
    error = error_of(client.post("/arena/battles", json=body), 403, "forbidden")
    assert "came from another site" in error["message"]
    error_of(client.post("/arena/battles", json=body, headers={"X-CSRF-Token": "forged"}), 403, "forbidden")
    with TestClient(client.app) as stranger:
        error_of(stranger.post("/arena/battles", json=body, headers=csrf), 401, "unauthorized")
        error_of(stranger.get("/arena/battles/1"), 401, "unauthorized")
    started = client.post("/arena/battles", json=body, headers=csrf)
    assert started.status_code == 201, started.text
    battle = started.json()
    assert battle["model_a"] is None and battle["turns"][0]["prompt"] == body["prompt"]
    path = f"/arena/battles/{battle['id']}"
    error_of(client.post(f"{path}/answers/a"), 403, "forbidden")
    texts = []
    for side in "ab":
        got = events(client, f"{path}/answers/{side}", csrf)
        assert got[-1] == {"done": True, "finish_reason": "stop"}
        texts.append("".join(e["delta"] for e in got[:-1]))
    assert client.get(path).json()["can_vote"]  # a read needs no CSRF token
    error_of(client.post(f"{path}/vote", json={"winner": "model_a"}), 403, "forbidden")
    voted = client.post(f"{path}/vote", json={"winner": "model_a"}, headers=csrf).json()
    assert {voted["model_a"], voted["model_b"]} <= set(ROSTER) and texts[0].startswith(voted["model_a"])
    again = error_of(
        client.post(f"{path}/vote", json={"winner": "model_b"}, headers=csrf), 409, "battle_refused"
    )
    assert again["rule"] == "one-vote" and "has its vote already" in again["message"]

    # Bob neither sees nor votes on Alice's battle.
    with TestClient(client.app) as other:
        bob = signed_in(app, other, "bob")
        error_of(other.get(path), 404, "battle_not_found")
        error_of(other.post(f"{path}/answers/a", headers=bob), 404, "battle_not_found")

    rows = ratings_rows(client.get("/arena").text)
    assert [r[1] for r in rows] == [voted["model_a"], voted["model_b"]] and [r[0] for r in rows] == ["1", "2"]
    assert all(re.fullmatch(r"-?\d+", r[2]) and r[4] == "1" for r in rows)
    assert "Note: no finite maximum-likelihood ratings" in client.get("/arena").text  # the fit's warning


class StoredAnswers:
    """Static battles' answers as a judged leaderboard's would give them (services.arena_static): one
    instruction answered by two models."""

    leaderboard = "judged_test"

    def pool(self) -> StaticPool:
        answers = {"org/stored-1": "Paris.", "org/stored-2": "It is <b>Paris</b>."}
        return StaticPool((StaticQuestion("judged_test:1", "The capital of France?", answers),))


def test_a_static_battle_from_the_page_and_an_arena_with_no_pair_says_so(app: App, clock: Clock) -> None:
    arena = ArenaService(
        arena_config([]),
        ArenaRepository(app.db),
        clock,
        streamer=None,
        static=StoredAnswers(),  # type: ignore[arg-type]
        limits=ArenaLimits(ratings_seconds=0),
        rng=np.random.default_rng(0),
    )
    app.arena = arena  # type: ignore[misc]
    with TestClient(create_api(app)) as client:
        csrf = signed_in(app, client, "carol")
        page = client.get("/arena").text
        assert 'id="arena-static"' in page and 'id="arena-prompt"' not in page  # static battles only
        error_of(
            client.post("/arena/battles", json={"prompt": "mine"}, headers=csrf), 409, "no_battle_possible"
        )
        mine = {"prompt": "mine", "mode": "static"}
        error_of(client.post("/arena/battles", json=mine, headers=csrf), 422, "invalid_input")
        battle = client.post("/arena/battles", json={"mode": "static"}, headers=csrf).json()
        assert battle["mode"] == "static" and battle["can_vote"] and not battle["can_continue"]
        turn = battle["turns"][0]
        assert turn["prompt"] == "The capital of France?" and {turn["answer_a"], turn["answer_b"]} == {
            "Paris.",
            "It is <b>Paris</b>.",
        }
        voted = client.post(
            f"/arena/battles/{battle['id']}/vote", json={"winner": "tie"}, headers=csrf
        ).json()
        assert {voted["model_a"], voted["model_b"]} == {"org/stored-1", "org/stored-2"}

    with_arena(app, clock, arena_config(["org/alone"]))
    with TestClient(create_api(app)) as client:
        signed_in(app, client, "carol")
        page = client.get("/arena").text
        assert "No two models can battle now" in page and 'id="arena-start"' not in page


def test_without_an_arena_the_page_says_so(database_url: str) -> None:
    with App.open(Settings(database_url=database_url)) as app, TestClient(create_api(app)) as client:
        page = client.get("/arena")
        assert page.status_code == 404 and "this leaderboard has no arena" in page.text
        error_of(client.post("/arena/battles", json={"prompt": "hi"}), 401, "unauthorized")
        csrf = signed_in(app, client, "erin")
        error_of(
            client.post("/arena/battles", json={"prompt": "hi"}, headers=csrf), 404, "arena_not_configured"
        )
