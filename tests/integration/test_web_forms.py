"""The pages' forms on SQLite and PostgreSQL: submit (a rejection shown next to its field with the rule and
fix; success leads to the request page), the request page's vote and admin actions (cancel, requeue, flag,
block) and the failed run's log tail for the submitter and admins only. Real tiny models from the local
model store go through the same validation as the API's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.app import App
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.tokens import TokenRepository

from .conftest import new_request

EVIL_CARD = "A tiny model for tests. <script>alert('card')</script> " + "It has a long enough card. " * 10


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    store = LocalModelStore(tmp_path_factory.mktemp("web-forms-store"))
    build_tiny_model(store, "good/tiny")
    build_tiny_model(store, "good/evil-card", card_body=EVIL_CARD, seed=3)
    build_tiny_model(store, "bad/no-license", license=None, seed=4)
    build_tiny_model(store, "good/no-template", chat_template=False, seed=5)
    return store


@pytest.fixture
def app(database_url: str, store: LocalModelStore, clock) -> Iterator[App]:
    application = App.open(Settings(database_url=database_url, model_store=store.root))
    application.clock = clock
    yield application
    application.close()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(create_api(app)) as http:
        yield http


def sign_in(app: App, client: TestClient, user: str, admin: bool = False) -> str:
    """Sign ``user`` in with an API token; the CSRF token of their forms."""
    _, token = TokenRepository(app.db).create(user, admin, "admin", app.clock())
    form = client.get("/signin").text
    nonce = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    signed = client.post("/signin", data={"csrf": nonce, "token": token}, follow_redirects=False)
    assert signed.status_code == 303
    return csrf_of(client.get("/submit").text)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def problem_of(page: str, field: str) -> str:
    found = re.search(
        rf'<p class="problem field-problem" role="alert" id="problem-{field}">(.*?)</p>', page, re.S
    )
    return unescape(found.group(1)) if found else ""


def test_the_form_explains_every_field_of_the_cli(client):
    page = client.get("/submit").text
    for field in (
        "model",
        "revision",
        "precision",
        "weight_type",
        "base_model",
        "model_type",
        "use_chat_template",
    ):
        assert f'name="{field}"' in page
    assert "bitsandbytes" in page and "PEFT adapter" in page and "chat template" in page
    assert "Sign in</a> to submit" in page and '<button type="submit" disabled>' in page


def test_a_good_model_is_submitted_and_leads_to_its_request_page(app, client):
    csrf = sign_in(app, client, "alice")
    sent = client.post(
        "/submit",
        data={"csrf": csrf, "model": "good/tiny", "revision": "main", "precision": "bfloat16",
              "weight_type": "Original", "model_type": "fine-tuned", "use_chat_template": "on"},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303
    (request,) = app.requests.all()
    assert sent.headers["location"] == f"/requests/{request.id}"
    assert request.model == "good/tiny" and request.sender == "alice" and request.use_chat_template
    page = client.get(sent.headers["location"]).text
    assert "good/tiny" in page and "PENDING by alice" in page
    assert "good/tiny" in client.get("/queue").text
    # The same model again: refused as a duplicate next to the model field, naming the request.
    again = client.post("/submit", data={"csrf": csrf, "model": "good/tiny", "model_type": "fine-tuned"})
    assert again.status_code == 409 and "rule 'duplicate'" in problem_of(again.text, "model")
    assert f"request {request.id}" in problem_of(again.text, "model")


@pytest.mark.parametrize(
    ("fields", "field", "expected"),
    [
        ({"model": "bad/no-license"}, "model", "rule 'license'"),
        ({"model": "nobody/here"}, "model", "rule 'model-exists'"),
        ({"model": "not a repo id"}, "model", "not valid"),
        ({"model": "good/tiny", "revision": "no-such-branch"}, "revision", "rule 'revision'"),
        ({"model": "good/tiny", "weight_type": "Adapter"}, "base_model", "rule 'base-model'"),
        (
            {"model": "good/no-template", "use_chat_template": "on"},
            "use_chat_template",
            "rule 'chat-template'",
        ),
        ({"model": "good/tiny", "model_type": ""}, "model_type", "rule 'model-type'"),
        ({"model": "good/tiny", "precision": "float8"}, "precision", "not valid"),
    ],
)
def test_a_rejection_is_shown_next_to_its_field_with_the_rule_and_fix(app, client, fields, field, expected):
    csrf = sign_in(app, client, "alice")
    data = {"csrf": csrf, "model_type": "fine-tuned", **fields}
    page = client.post("/submit", data=data)
    assert page.status_code in (404, 409, 422), page.status_code
    shown = problem_of(page.text, field)
    assert expected in shown, page.text
    if expected.startswith("rule"):
        assert "Fix:" in shown
    assert f'value="{unescape(fields["model"])}"' in unescape(page.text)  # what was typed is kept
    assert app.requests.all() == []
    assert "/tmp/" not in page.text and str(app.settings.model_store) not in page.text


def test_no_anonymous_and_no_cross_site_submissions(app, client):
    anonymous = client.post("/submit", data={"model": "good/tiny", "model_type": "fine-tuned"})
    assert anonymous.status_code == 401 and "sign in to submit" in anonymous.text
    sign_in(app, client, "alice")
    forged = client.post("/submit", data={"model": "good/tiny", "model_type": "fine-tuned"})
    assert forged.status_code == 403 and "came from another site" in unescape(forged.text)
    assert app.requests.all() == []


def test_the_submission_limit_per_user_is_the_apis(app, database_url, store, clock):
    limited = App.open(
        Settings(database_url=database_url, model_store=store.root, api_submissions_per_hour=1)
    )
    limited.clock = clock
    try:
        with TestClient(create_api(limited)) as http:
            csrf = sign_in(limited, http, "alice")
            good = {"csrf": csrf, "model": "good/tiny", "model_type": "chat"}
            first = http.post("/submit", data=good, follow_redirects=False)
            assert first.status_code == 303
            second = http.post(
                "/submit", data={"csrf": csrf, "model": "good/evil-card", "model_type": "chat"}
            )
            assert second.status_code == 429 and problem_of(second.text, "")
            assert len(limited.requests.all()) == 1
    finally:
        limited.close()


def test_a_card_holding_script_renders_inert(app, client):
    csrf = sign_in(app, client, "alice")
    sent = client.post(
        "/submit",
        data={"csrf": csrf, "model": "good/evil-card", "model_type": "chat"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    for path in ("/queue", sent.headers["location"], "/submit"):
        assert "<script>alert" not in client.get(path).text


def failed_request(app: App, clock) -> int:
    request = app.requests.create(new_request(model="org/failing", sender="alice"), clock(), None)
    app.queue.claim("local:1")
    app.queue.fail(request.id, "local:1", "the run ran out of memory", transient=False,
                   log_tail="Traceback ...\nFile /srv/leaderboard/work/7/run.py\nMemoryError", log_path="/srv/leaderboard/work/7/log")  # fmt: skip
    return request.id


def test_the_log_tail_is_for_the_submitter_and_admins_only(app, clock, client):
    request_id = failed_request(app, clock)
    anonymous = client.get(f"/requests/{request_id}").text
    assert "the run ran out of memory" in anonymous and "MemoryError" not in anonymous
    sign_in(app, client, "mallory")
    assert "MemoryError" not in client.get(f"/requests/{request_id}").text
    client.cookies.clear()
    sign_in(app, client, "alice")
    submitter = client.get(f"/requests/{request_id}").text
    assert "MemoryError" in submitter and "/srv/leaderboard" not in submitter  # no server path
    client.cookies.clear()
    sign_in(app, client, "root", admin=True)
    assert "MemoryError" in client.get(f"/requests/{request_id}").text


def test_admins_cancel_requeue_flag_and_block_from_the_request_page(app, clock, client):
    failed = failed_request(app, clock)
    pending = app.requests.create(new_request(model="org/pending", sha="1" * 40), clock(), None).id
    csrf = sign_in(app, client, "alice")
    refused = client.post(f"/requests/{pending}/cancel", data={"csrf": csrf})
    assert refused.status_code == 403 and "only admins" in refused.text
    assert "<h2>Admin</h2>" not in client.get(f"/requests/{pending}").text
    client.cookies.clear()
    csrf = sign_in(app, client, "root", admin=True)
    page = client.get(f"/requests/{pending}").text
    assert "<h2>Admin</h2>" in page and "Cancel the request" in page and "Requeue" not in page
    assert client.post(f"/requests/{pending}/cancel", data={"reason": "no"}).status_code == 403  # no CSRF
    done = client.post(
        f"/requests/{pending}/cancel", data={"csrf": csrf, "reason": "duplicate"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == f"/requests/{pending}"
    assert app.queue.get(pending).status.value == "CANCELLED"
    assert "by root (duplicate)" in client.get(f"/requests/{pending}").text
    again = client.post(f"/requests/{pending}/cancel", data={"csrf": csrf})
    assert again.status_code == 409  # cancelled already: the transition is refused, with why
    assert "Requeue" in client.get(f"/requests/{failed}").text
    assert (
        client.post(f"/requests/{failed}/requeue", data={"csrf": csrf}, follow_redirects=False).status_code
        == 303
    )
    assert app.queue.get(failed).status.value == "PENDING"
    no_reason = client.post(f"/requests/{failed}/flag", data={"csrf": csrf, "reason": " "})
    assert no_reason.status_code == 422 and "give a reason" in no_reason.text
    client.post(f"/requests/{failed}/flag", data={"csrf": csrf, "reason": "contaminated"})
    assert [e.key for e in app.moderation.flags.entries()] == ["org/failing"]
    client.post(f"/requests/{failed}/block", data={"csrf": csrf, "reason": "spam", "scope": "namespace"})
    assert [e.key for e in app.moderation.blocklist.entries()] == ["org/*"]
    page = client.get(f"/requests/{failed}").text
    assert "contaminated (by root)" in page and "org/*: spam" in page
    bad_scope = client.post(f"/requests/{failed}/block", data={"csrf": csrf, "reason": "x", "scope": "world"})
    assert bad_scope.status_code == 422


def test_vote_from_the_request_page_comes_back_to_it(app, clock, client):
    pending = app.requests.create(new_request(model="org/pending"), clock(), None).id
    csrf = sign_in(app, client, "bob")
    voted = client.post(
        f"/requests/{pending}/vote", data={"csrf": csrf, "back": "request"}, follow_redirects=False
    )
    assert voted.status_code == 303 and voted.headers["location"] == f"/requests/{pending}"
    page = client.get(f"/requests/{pending}").text
    assert "Withdraw my vote" in page and '<dd class="votes">2</dd>' in page
