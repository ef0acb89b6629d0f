"""The arena page in a real browser: Debian's headless Chromium driven by Playwright against a live
`leaderboard serve` whose arena battles two tiny real models (built into a local model store, with chat
templates) through the embedded model endpoint (`endpoint: local`). Sign in, ask, watch both answers stream
in, vote once both are complete, see the names, be refused a second vote. Screenshots are kept under
artifacts/browser/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backend.app import App
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.tokens import TokenRepository
from tests.acceptance import test_browser
from tests.acceptance.live_api import Server, base_env, live_server
from tests.acceptance.test_browser import ARTIFACTS, Tab

pytestmark = pytest.mark.slow
browser = test_browser.browser  # the same Chromium fixture (one per module)
ROSTER = ("arena/tiny-one", "arena/tiny-two")
PROMPT = 'Say hello to <img src=x onerror="window.__pwned=1"> <b>everyone</b>'
ARENA = """schema_version: 1
kind: arena
name: browser_arena
title: Browser arena
models:
  - {{name: {0}, endpoint: local}}
  - {{name: {1}, endpoint: local}}
generation:
  max_tokens: 24
  temperature: 0.7
ratings:
  bootstrap: 20
"""
# Watches the battle while it plays: whether a vote button was ever enabled while an answer was still
# streaming or empty, and in how many pieces each answer came (each delta is appended as its own text node).
WATCH = """() => {
  window.__arena = {early: false, pieces: {a: 0, b: 0}, streamed: false};
  const check = () => {
    const answers = [...document.querySelectorAll('#arena-battle .answer')];
    const enabled = [...document.querySelectorAll('#arena-votes button')].some(b => !b.disabled);
    const streaming = answers.some(a => a.classList.contains('streaming'));
    if (streaming) window.__arena.streamed = true;
    if (enabled && (streaming || answers.length < 2 || answers.some(a => !a.textContent))) window.__arena.early = true;
    for (const side of ['a', 'b']) {
      const answer = document.querySelector(`#side-${side} .answer`);
      if (answer) window.__arena.pieces[side] = Math.max(window.__arena.pieces[side], answer.childNodes.length);
    }
  };
  new MutationObserver(check).observe(document.getElementById('arena'),
    {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def arena_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A live server whose arena (LEADERBOARD_ARENA, a config file written here) battles two tiny models
    of a local model store on the embedded endpoint; a user's API token."""
    root = tmp_path_factory.mktemp("arena-site")
    store = LocalModelStore(root / "models")
    for seed, model in enumerate(ROSTER, start=1):
        build_tiny_model(store, model, seed=seed)  # with a chat template: the endpoint needs one
    config = root / "browser_arena.yaml"
    config.write_text(ARENA.format(*ROSTER))
    url = f"sqlite:///{root / 'leaderboard.db'}"
    with App.open(Settings(database_url=url)) as app:
        _, token = TokenRepository(app.db).create("arena-voter", False, "admin", app.clock())
    env = base_env(
        url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_ARENA=str(config),
        LEADERBOARD_SERVE_DEVICE="cpu",
        LEADERBOARD_ARENA_RATINGS_SECONDS="0",  # the table refitted at once after the vote
        LEADERBOARD_WORK_DIR=str(root / "work"),
    )
    with live_server(env, root / "serve.log") as server:
        yield server, token


def shot(tab: Tab, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_anyone_sees_the_ratings_and_is_asked_to_sign_in_to_battle(arena_site, browser):
    server, _ = arena_site
    tab = Tab(browser, server.url)
    tab.open("/arena", "arena-anonymous")
    assert tab.page.locator("a", has_text="Sign in to battle").count() == 1
    assert tab.page.locator("#arena-prompt").count() == 0
    assert "No votes yet" in tab.page.inner_text("main")
    assert tab.page.locator("nav a", has_text="Arena").get_attribute("href") == "/arena"
    assert tab.errors == []


def test_a_battle_streams_both_answers_takes_one_vote_and_reveals_the_roster(arena_site, browser):
    server, token = arena_site
    tab = Tab(browser, server.url)
    page: Any = tab.page
    tab.open("/signin")
    page.fill("input[name=token]", token)
    page.click("form.signin button[type=submit]")
    page.wait_for_url("**/queue")
    tab.open("/arena", "arena-signed-in")
    assert page.locator("#arena-votes").is_hidden() and page.locator("#arena-battle").is_hidden()

    page.evaluate(WATCH)
    page.fill("#arena-prompt", PROMPT)
    page.click("#arena-send")
    page.wait_for_selector("#arena-battle .answer.streaming")
    # The models load on first use, then generate: both answers complete, then the buttons enable.
    page.wait_for_selector("#arena-votes button[data-winner=model_a]:not([disabled])", timeout=180_000)
    watched = page.evaluate("window.__arena")
    assert watched["streamed"] and not watched["early"], watched
    assert watched["pieces"]["a"] > 1 and watched["pieces"]["b"] > 1, watched  # streamed in pieces
    answers = {side: page.inner_text(f"#side-{side} .answer") for side in "ab"}
    assert all(text.strip() for text in answers.values()), answers
    for side in "ab":
        assert page.inner_text(f"#side-{side} .prompt") == PROMPT  # the prompt, as text
        assert page.inner_text(f"#name-{side}") == ""  # no name before the vote
    assert page.inner_text("#arena-status") == "Both answers are in: which is better?"
    shot(tab, "arena-answered")

    page.click("#arena-votes button[data-winner=model_a]")
    page.wait_for_selector("#side-a.revealed")
    names = [page.inner_text(f"#name-{side}").removeprefix("· ") for side in "ab"]
    assert sorted(names) == sorted(ROSTER), names
    assert page.locator("#side-a.winner").count() == 1 and page.locator("#side-b.winner").count() == 0
    assert page.inner_text("#arena-status").startswith("You voted: A is better")
    assert all(page.locator(f"#arena-votes button >> nth={i}").is_disabled() for i in range(4))
    battle = int(page.evaluate("location.hash").removeprefix("#battle-"))
    shot(tab, "arena-voted")

    # A second vote on the same battle: a re-enabled button, and the route called from the page.
    page.evaluate("document.querySelector('#arena-votes button[data-winner=model_b]').disabled = false")
    page.click("#arena-votes button[data-winner=model_b]")
    page.wait_for_selector("#arena-problem:not([hidden])")
    assert "refused by rule 'one-vote'" in page.inner_text("#arena-problem")
    shot(tab, "arena-second-vote")
    refused = page.evaluate(
        """async (battle) => {
          const csrf = document.getElementById('arena').dataset.csrf;
          const response = await fetch(`/arena/battles/${battle}/vote`, {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
            body: JSON.stringify({winner: 'tie'})});
          return [response.status, await response.json()];
        }""",
        battle,
    )
    assert refused[0] == 409 and refused[1]["error"]["rule"] == "one-vote", refused
    forged = page.request.post(f"{server.url}/arena/battles/{battle}/vote", data={"winner": "tie"})
    assert forged.status == 403 and forged.json()["error"]["code"] == "forbidden"  # no CSRF header

    # The conversation goes on after the vote: both models answer the next prompt under the first turn.
    page.fill("#arena-next", "And then?")
    page.click("#arena-continue button[type=submit]")
    for side in "ab":  # (the page's CSP forbids eval, so no wait_for_function: selectors only)
        page.locator(f"#side-{side} .turn[data-turn='2'] .answer:not(.streaming)").wait_for()
        assert page.inner_text(f"#side-{side} .turn[data-turn='2'] .answer").strip()
        assert page.inner_text(f"#side-{side} .turn[data-turn='2'] .prompt") == "And then?"
    assert page.inner_text("#side-a .turn[data-turn='1'] .answer") == answers["a"]
    shot(tab, "arena-continued")

    # The vote counts: the ratings table has both models, the one voted for first.
    tab.open("/arena", "arena-ratings")
    rows = page.locator("table.ratings tbody tr")
    assert rows.count() == 2 and rows.nth(0).locator("td.model").inner_text() == names[0]
    assert "1 vote counted" in page.inner_text("main")
    assert page.evaluate("window.__pwned") is None
    # The battle comes back with its URL (#battle-ID): voted, named, its answers as they were.
    page.evaluate(f"location.hash = '#battle-{battle}'")
    page.reload()
    page.wait_for_selector("#side-a.revealed")
    assert [page.inner_text(f"#name-{side}").removeprefix("· ") for side in "ab"] == names
    assert {side: page.inner_text(f"#side-{side} .turn[data-turn='1'] .answer") for side in "ab"} == answers
    assert page.evaluate("window.__pwned") is None
    assert [e for e in tab.errors if "status of 409" not in e] == [], tab.errors


def test_the_api_serves_the_same_arena(arena_site):
    import httpx

    server, _ = arena_site
    info = httpx.get(f"{server.url}/api/arena", timeout=30).json()
    assert info == {
        "name": "browser_arena",
        "title": "Browser arena",
        "modes": ["live"],
        "models": 2,
        "max_turns": 8,
        "max_prompt_chars": 8000,
        "daily_votes": 200,
    }
