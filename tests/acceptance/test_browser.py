"""The pages in a real browser: Debian's headless Chromium driven by Playwright against a live
`leaderboard serve` whose database holds real evaluations. Every page answers, with no console error (a CSP
violation is one), a `<script>` in a name or a failure reason stays inert, and the table's view is in its
URL. Screenshots of each page are kept under artifacts/browser/."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.app import App
from backend.domain import ModelType, Precision
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.tokens import TokenRepository
from tests.acceptance.live_api import Server, base_env, live_server
from tests.integration.conftest import Clock, new_request
from tests.integration.test_publish import MODELS, evaluate
from tests.integration.test_web_plots import PARAMS, varied

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")  # scripts/ensure-chromium.sh installs it (`make test` runs that)
ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "browser"
EVIL_NAME = "org/<script>window.__pwned=1</script>"
EVIL_REASON = '<img src=x onerror="window.__pwned=2"> the run broke'
EVIL_CARD = "A tiny model. <script>window.__pwned=3</script> " + "Its card is long enough to pass. " * 10
TOKENS: dict[str, str] = {}
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, int]]]:
    """A served database with three evaluated models, one whose stored name holds a script (data an older
    version could have let in), a pending request and a failed one whose reason holds markup."""
    root = tmp_path_factory.mktemp("site")
    url = f"sqlite:///{root / 'leaderboard.db'}"
    store = LocalModelStore(root / "models")
    build_tiny_model(store, "good/tiny")
    build_tiny_model(store, "good/card-with-script", card_body=EVIL_CARD, seed=3)
    build_tiny_model(store, "bad/no-license", license=None, seed=4)
    app = App.open(Settings(database_url=url, work_dir=root / "work", model_store=store.root))
    app.clock = clock = Clock()
    ids = {
        model: evaluate(app, clock, root, model, *rest, edit=varied(model), params_b=PARAMS[model])[0].id
        for model, *rest in MODELS
    }
    evil = evaluate(app, clock, root, EVIL_NAME, Precision.BFLOAT16, ModelType.CHAT, 1.0, edit=varied("e"))
    ids["evil"] = evil[0].id
    failed = app.requests.create(new_request(model="org/failing", sha="b" * 40), clock(), None)
    app.queue.claim("w")
    app.queue.fail(
        failed.id,
        "w",
        EVIL_REASON,
        transient=False,
        log_tail="Traceback (most recent call last)\nMemoryError",
    )
    ids["failed"] = failed.id
    ids["pending"] = app.requests.create(new_request(model="org/waiting", sha="c" * 40), clock(), None).id
    _, token = TokenRepository(app.db).create("voter", False, "admin", clock())
    _, admin = TokenRepository(app.db).create("root", True, "admin", clock())
    app.close()
    TOKENS["voter"], TOKENS["root"] = token, admin
    env = base_env(url, LEADERBOARD_MODEL_STORE=str(store.root), LEADERBOARD_WORK_DIR=str(root / "work"))
    with live_server(env, root / "serve.log") as server:
        yield server, ids


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "run scripts/ensure-chromium.sh (make test does)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


class Tab:
    """A page that records every console error and uncaught exception."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str, shot: str | None = None) -> Any:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        if shot:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
        return response

    def rows(self) -> list[str]:
        return [t.strip() for t in self.page.locator("td.model > a:first-child").all_inner_texts()]


def test_every_page_answers_without_an_error_and_scripts_in_data_stay_inert(site, browser):
    server, ids = site
    tab = Tab(browser, server.url)
    pages = {
        "leaderboard": "/",
        "queue": "/queue",
        "result": f"/results/{ids['org-a/alpha']}",
        "result-evil": f"/results/{ids['evil']}",
        "request-failed": f"/requests/{ids['failed']}",
        "request-pending": f"/requests/{ids['pending']}",
        "plots": "/plots",
        "submit": "/submit",
        "signin": "/signin",
    }
    for shot, path in pages.items():
        tab.open(path, shot)
        assert tab.page.evaluate("window.__pwned") is None, path  # nothing from the data ran
    assert tab.errors == []  # no console error: no CSP violation, no failed asset
    tab.open("/")
    assert EVIL_NAME in tab.rows()  # shown as text
    tab.open("/queue")
    assert EVIL_REASON in tab.page.inner_text("body")
    tab.open(f"/results/{ids['org-a/alpha']}")
    assert tab.page.locator("svg.plot rect.bar").count() == 6
    assert tab.page.locator("svg.plot").bounding_box()["width"] > 300  # the stylesheet and the plot render
    tab.open("/plots")
    images = tab.page.locator("figure.chart img")
    assert images.count() == 3
    for i in range(3):  # each plot loaded and drew (an image blocked or broken has no natural width)
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 100"), i
    assert tab.errors == []


def test_the_table_sorts_filters_and_searches_and_a_shared_url_restores_the_view(site, browser):
    server, _ = site
    tab = Tab(browser, server.url)
    tab.open("/")
    assert len(tab.rows()) == 4
    tab.page.fill("input[name=search]", "beta")
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url("**/?*search=beta*")
    assert tab.rows() == ["org-b/beta"]
    tab.open("/")
    tab.page.select_option("select[name=precision]", "bfloat16")
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url("**precision=bfloat16**")
    tab.page.click("th a:text-is('Model')")  # sort by name, best (z..a) first
    tab.page.wait_for_url("**sort=fullname**")
    shared = tab.page.url
    shown = tab.rows()
    assert "org-b/beta" not in shown and shown == sorted(shown, reverse=True)
    tab.page.click("th a:text('Model')")  # again: ascending
    tab.page.wait_for_url("**order=asc**")
    assert tab.rows() == sorted(shown)
    other = Tab(browser, server.url)
    other.page.goto(shared)
    assert other.rows() == shown  # the same view from the URL alone
    assert other.page.locator("select[name=precision]").input_value() == "bfloat16"
    other.page.click(f"td.model > a:text-is('{shown[0]}')")
    other.page.wait_for_url("**/results/*")
    assert other.page.locator("h1").inner_text() == shown[0]
    assert tab.errors == [] and other.errors == []


def test_sign_in_with_a_token_vote_be_refused_a_second_vote_and_withdraw(site, browser):
    server, _ = site
    tab = Tab(browser, server.url)
    tab.open("/signin", "signin")
    tab.page.fill("input[name=token]", TOKENS["voter"])
    tab.page.click("form.signin button[type=submit]")
    tab.page.wait_for_url("**/queue")
    assert tab.page.inner_text(".who .user") == "voter"
    stale = tab.context.new_page()  # the same queue in a second tab, signed in too
    stale.goto(server.url + "/queue")
    row = tab.page.locator("tr", has_text="org/waiting")
    before = int(row.locator("td.num").inner_text())
    row.locator("button.vote").click()
    tab.page.wait_for_url("**/queue")
    row = tab.page.locator("tr", has_text="org/waiting")
    assert int(row.locator("td.num").inner_text()) == before + 1
    tab.page.screenshot(path=str(ARTIFACTS / "queue-signed-in.png"), full_page=True)
    stale.locator("tr", has_text="org/waiting").locator("button.vote").click()  # its Vote button, again
    stale.wait_for_load_state()
    assert "already voted" in stale.inner_text("main")  # refused, saying why
    tab.open("/queue")
    tab.page.locator("tr", has_text="org/waiting").locator("button.unvote").click()
    tab.page.wait_for_url("**/queue")
    assert int(tab.page.locator("tr", has_text="org/waiting").locator("td.num").inner_text()) == before
    assert tab.errors == []


def sign_in(tab: Tab, user: str) -> None:
    tab.open("/signin")
    tab.page.fill("input[name=token]", TOKENS[user])
    tab.page.click("form.signin button[type=submit]")
    tab.page.wait_for_url("**/queue")


def test_submit_a_good_model_and_a_broken_one_and_a_post_without_the_csrf_token_is_refused(site, browser):
    server, ids = site
    tab = Tab(browser, server.url)
    sign_in(tab, "voter")
    tab.open("/submit")
    tab.page.fill("input[name=model]", "good/tiny")
    tab.page.select_option("select[name=model_type]", "fine-tuned")
    tab.page.click("form.submit button[type=submit]")
    tab.page.wait_for_url("**/requests/*")
    assert "good/tiny" in tab.page.locator("h1").inner_text()
    assert tab.page.inner_text("dd.status") == "PENDING"
    tab.page.screenshot(path=str(ARTIFACTS / "request-submitted.png"), full_page=True)
    tab.open("/queue")
    assert (
        tab.page.locator("section.queue", has_text="Pending").locator("tr", has_text="good/tiny").count() == 1
    )
    # A broken model: the rule and its fix next to the model field, what was typed kept.
    tab.open("/submit")
    tab.page.fill("input[name=model]", "bad/no-license")
    tab.page.select_option("select[name=model_type]", "pretrained")
    tab.page.click("form.submit button[type=submit]")
    tab.page.wait_for_load_state()
    shown = tab.page.inner_text("#problem-model")
    assert "rule 'license'" in shown and "Fix:" in shown
    assert tab.page.input_value("input[name=model]") == "bad/no-license"
    assert tab.page.get_attribute("input[name=model]", "aria-invalid") == "true"
    tab.page.screenshot(path=str(ARTIFACTS / "submit-rejected.png"), full_page=True)
    # The rejection's page is a 422, which the browser notes; nothing else went wrong.
    assert [e for e in tab.errors if "status of 422" not in e] == [] and len(tab.errors) == 1
    tab.errors.clear()
    # A model whose card holds a script: accepted, and nothing of it runs anywhere.
    tab.open("/submit")
    tab.page.fill("input[name=model]", "good/card-with-script")
    tab.page.select_option("select[name=model_type]", "chat")
    tab.page.click("form.submit button[type=submit]")
    tab.page.wait_for_url("**/requests/*")
    for path in ("/queue", "/"):
        tab.open(path)
        assert tab.page.evaluate("window.__pwned") is None
    # The signed-in browser's own cookies, but no CSRF token: refused, and the vote is not counted.
    before = tab.page.request.get(f"{server.url}/api/requests/{ids['pending']}").json()["request"]["votes"]
    forged = tab.page.request.post(f"{server.url}/requests/{ids['pending']}/vote", form={"back": "request"})
    assert forged.status == 403 and "came from another site" in forged.text()
    forged = tab.page.request.post(f"{server.url}/submit", form={"model": "good/tiny", "model_type": "chat"})
    assert forged.status == 403
    after = tab.page.request.get(f"{server.url}/api/requests/{ids['pending']}").json()["request"]["votes"]
    assert after == before
    assert tab.errors == []


def test_an_admin_sees_the_log_tail_and_the_admin_actions(site, browser):
    server, ids = site
    tab = Tab(browser, server.url)
    tab.open(f"/requests/{ids['failed']}")
    assert tab.page.locator("section.admin").count() == 0 and tab.page.locator("pre.log").count() == 0
    sign_in(tab, "root")
    tab.open(f"/requests/{ids['failed']}", "request-admin")
    assert "MemoryError" in tab.page.inner_text("pre.log")
    admin = tab.page.locator("section.admin")
    assert admin.locator("button", has_text="Requeue").count() == 1
    assert admin.locator("button", has_text="Flag").count() == 1
    assert tab.page.evaluate("window.__pwned") is None and tab.errors == []


def test_the_readme_shows_the_leaderboard_page_as_these_tests_screenshot_it():
    """docs/leaderboard.png is this file's screenshot of `/` (`make readme-screenshot` copies it there)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    picture = Path(__file__).parents[2] / "docs" / "leaderboard.png"
    assert "![The leaderboard page](docs/leaderboard.png)" in readme
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == VIEWPORT["width"] and height >= VIEWPORT["height"]  # a full page at the tests' viewport
