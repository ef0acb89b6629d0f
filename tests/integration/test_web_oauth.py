"""Sign in to the pages with a Hugging Face account, through the Hub's OAuth (authorization code with PKCE),
against a local authorization server that speaks the Hub's endpoints (tests/oauth_hub.py), on SQLite and
PostgreSQL. Every failure is a page that says what to do; the app's secret and the Hub's access tokens are
in no response and no log line of any test here."""

from __future__ import annotations

import base64
import json
import logging
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.cli.main import cli
from backend.errors import ConfigurationError
from backend.settings import Settings, get_settings
from backend.web.oauth import STATE_COOKIE
from tests.oauth_hub import OAuthHub, Served, closed_port

from .conftest import new_request
from .test_web_pages import csrf_of


@pytest.fixture
def hub():
    served_hub = OAuthHub()
    served = Served(served_hub)
    yield served_hub
    served.close()


def configure(app, hub: OAuthHub, **changes) -> None:
    """``app`` with the OAuth app registered on ``hub`` (``changes`` override settings)."""
    values = {
        "oauth_client_id": hub.client_id,
        "oauth_client_secret": SecretStr(hub.client_secret),
        "oauth_endpoint": hub.url,
        **changes,
    }
    app.settings = app.settings.model_copy(update=values)


@pytest.fixture
def serve(hub, caplog):
    """A TestClient over the app (configure it first); when the test ends, no response it got and no log
    line holds the app's secret or an access token the Hub issued."""
    caplog.set_level(logging.DEBUG, logger="backend")
    seen: list[str] = []

    def record(response: httpx.Response) -> None:
        response.read()
        seen.append(f"{response.headers!r} {response.text}")

    clients = []

    def make(app) -> TestClient:
        http = TestClient(create_api(app))
        http.event_hooks = {"response": [record]}
        clients.append(http.__enter__())
        return http

    yield make
    for http in clients:
        http.__exit__(None, None, None)
    secrets = [hub.client_secret, *hub.tokens]
    for text in [*seen, *(r.getMessage() + repr(vars(r)) for r in caplog.records)]:
        assert not any(secret in text for secret in secrets)


@pytest.fixture
def client(app, hub, serve):
    configure(app, hub)
    return serve(app)


def start(client: TestClient, **headers: str) -> str:
    """/oauth/login: the Hub authorize URL it sends the browser to."""
    login = client.get("/oauth/login", headers=headers, follow_redirects=False)
    assert login.status_code == 302
    return login.headers["location"]


def at_hub(authorize_url: str) -> str:
    """The browser at the Hub's authorize page (signed in there, allowing the app): the path and query of
    the callback the Hub sends it back to."""
    answer = httpx.get(authorize_url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["location"])
    return f"{back.path}?{back.query}"


def hub_sign_in(client: TestClient) -> httpx.Response:
    return client.get(at_hub(start(client)), follow_redirects=False)


def session_of(client: TestClient) -> dict:
    payload = client.cookies["lb_session"].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload))


def assert_no_session(response: httpx.Response) -> None:
    assert "lb_session" not in response.headers.get("set-cookie", "")


def test_sign_in_with_hugging_face_then_the_queue_page_shows_the_user(client, hub):
    signin = client.get("/signin").text
    assert '<a href="/oauth/login">Sign in with Hugging Face</a>' in signin
    authorize = start(client)
    url = urlsplit(authorize)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{hub.url}/oauth/authorize"
    assert query["response_type"] == "code" and query["client_id"] == hub.client_id
    assert query["redirect_uri"] == "http://testserver/oauth/callback"
    assert query["scope"] == "openid profile" and query["code_challenge_method"] == "S256"
    state_cookie = client.cookies[STATE_COOKIE]
    assert query["state"] == state_cookie.split(".")[0]
    assert query["code_challenge"] not in state_cookie  # the cookie keeps the verifier, the Hub sees its hash
    signed = client.get(at_hub(authorize), follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/queue"
    cookies = signed.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("lb_session=")).lower()
    assert (
        "httponly" in session_cookie and "samesite=lax" in session_cookie and "secure" not in session_cookie
    )
    assert any(c.startswith(f'{STATE_COOKIE}=""') and "Max-Age=0" in c for c in cookies)  # used once
    session = session_of(client)
    assert (session["user"], session["via"], session["is_admin"], session["token_hash"]) == (
        "alice",
        "hub",
        False,
        "",
    )
    assert '<span class="user">alice</span>' in client.get("/queue").text


def test_a_hub_signed_in_user_votes_from_the_queue_page(app, clock, client, hub):
    request = app.requests.create(new_request(model="org/pending", sender="alice"), clock(), None)
    hub.user = "bob"
    assert hub_sign_in(client).status_code == 303
    page = client.get("/queue").text
    assert '<span class="user">bob</span>' in page and ">Vote</button>" in page
    voted = client.post(f"/requests/{request.id}/vote", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert voted.status_code == 303 and app.queue.get(request.id).votes == 2
    assert "bob" in {v.user for v in app.vote_repository.all_votes(request.id)}
    assert "Withdraw my vote" in client.get("/queue").text


def test_a_hub_user_named_in_api_admins_is_an_admin(app, hub, serve):
    configure(app, hub, api_admins="carol, dave")
    client = serve(app)
    hub.user = "carol"
    hub_sign_in(client)
    assert session_of(client)["is_admin"] is True


def test_a_callback_whose_state_is_not_this_browsers_signs_no_one_in(app, hub, client, serve):
    callback = at_hub(start(client))
    path, _, query = callback.partition("?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    forged = client.get(path, params={**params, "state": "another-state"})
    assert forged.status_code == 400 and "state does not match" in forged.text
    assert_no_session(forged)
    assert len(hub.grants) == 1  # the code was never exchanged
    # Another browser (no state cookie: a link from another site) is refused the same way.
    other = serve(app)
    replayed = other.get(callback)
    assert replayed.status_code == 400 and "started in another browser" in replayed.text
    assert_no_session(replayed)
    assert len(hub.grants) == 1
    assert '<span class="user">' not in other.get("/queue").text


def test_a_wrong_pkce_verifier_is_refused_by_the_hub_and_shown_as_a_page(client, hub):
    callback = at_hub(start(client))
    state = client.cookies[STATE_COOKIE].split(".")[0]
    client.cookies.set(STATE_COOKIE, f"{state}.{'x' * 64}", domain="testserver.local", path="/oauth")
    refused = client.get(callback)
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("text/html")
    assert "the Hub refused the sign-in code (invalid_grant: PKCE verification failed)" in unescape(
        refused.text
    )
    assert 'href="/signin"' in refused.text
    assert_no_session(refused)
    assert not hub.tokens  # no token issued


def test_a_callback_is_good_once(client):
    callback = at_hub(start(client))
    assert client.get(callback, follow_redirects=False).status_code == 303
    again = client.get(callback)
    assert again.status_code == 400 and "start it again" in again.text


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("error=access_denied", 400, "you did not allow this leaderboard to sign you in on the Hub"),
        ("error=server_error", 503, "the Hub could not sign you in now (server_error): try again later"),
        ("error=temporarily_unavailable", 503, "(temporarily_unavailable): try again later"),
        (
            "error=invalid_scope&error_description=%3Cscript%3Ealert(1)%3C/script%3E",
            400,
            "the Hub refused the sign-in (invalid_scope: <script>alert(1)</script>)",
        ),
        ("error=" + "%3Cx%3E" * 500, 400, "the Hub refused the sign-in (an error)"),
        (
            "error=invalid_request&error_description=" + "d" * 5000,
            400,
            "(invalid_request: " + "d" * 197 + "...)",
        ),
    ],
)
def test_an_error_from_the_hub_is_a_page_saying_what_to_do(client, query, status, message):
    start(client)
    page = client.get(f"/oauth/callback?{query}&state=whatever")
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert message in unescape(page.text)
    assert "<script>alert" not in page.text  # the Hub's text is escaped
    assert_no_session(page)


def test_declining_at_the_hub_is_a_page_saying_so(client, hub):
    hub.consent = False
    page = client.get(at_hub(start(client)))
    assert page.status_code == 400 and "you did not allow" in page.text


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"state": "s"},
        {"code": "c"},
        {"state": "s" * 5000, "code": "c"},
        {"state": "s", "code": "c" * 5000},
        {"state": "é", "code": "ü"},
    ],
)
def test_a_callback_with_missing_or_oversized_values_is_a_400_page(client, params):
    start(client)
    page = client.get("/oauth/callback", params=params)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert_no_session(page)


@pytest.mark.parametrize(("code", "message"), [("not-a-code", "unknown or used code"), ("ü", "no valid")])
def test_a_callback_with_the_right_state_and_a_bad_code_is_refused(client, code, message):
    start(client)
    state = client.cookies[STATE_COOKIE].split(".")[0]
    page = client.get("/oauth/callback", params={"state": state, "code": code})
    assert page.status_code == 400 and message in page.text
    # The state is good for one callback: the login starts again.
    assert client.get("/oauth/callback", params={"state": state, "code": code}).status_code == 400
    assert STATE_COOKIE not in client.cookies


def test_a_hub_that_is_down_is_a_503_page(app, hub, serve):
    configure(app, hub, oauth_endpoint=closed_port())
    client = serve(app)
    start(client)  # the login only builds the Hub's URL
    state = client.cookies[STATE_COOKIE].split(".")[0]
    page = client.get("/oauth/callback", params={"state": state, "code": "a-code"})
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "the Hub cannot be reached to exchange the sign-in code (ConnectError)" in unescape(page.text)
    assert "sign in with an API token" in page.text
    assert_no_session(page)


def test_a_failing_hub_is_a_503_page(client, hub):
    callback = at_hub(start(client))
    hub.failing = True
    page = client.get(callback)
    assert page.status_code == 503 and "(HTTP 503): try again later" in page.text


def test_a_wrong_client_secret_is_a_502_page_for_the_admin_without_the_secret(app, hub, serve):
    configure(app, hub, oauth_client_secret=SecretStr("not-the-secret-" + "z" * 20))
    client = serve(app)
    page = client.get(at_hub(start(client)))
    assert page.status_code == 502 and "LEADERBOARD_OAUTH_CLIENT_SECRET" in page.text
    assert "not-the-secret" not in page.text
    assert_no_session(page)


@pytest.mark.parametrize(
    "answer",
    [
        {"preferred_username": 42},
        {"preferred_username": None},
        {"preferred_username": ["alice"]},
        {"preferred_username": "a" * 200},
        {"preferred_username": "alice bob"},
        {"preferred_username": "<script>"},
        {"preferred_username": "../../etc"},
        {"name": "alice"},
        [],
        "alice",
        b"not json",
        b"\xff\xfe",
        b"[" * 50000,  # nested past what the JSON parser takes
        b"[" + b"1," * 40000 + b"1]",  # past the answer size limit
    ],
)
def test_a_userinfo_answer_without_a_valid_user_name_is_a_502_page(client, hub, answer):
    hub.userinfo = answer
    page = client.get(at_hub(start(client)))
    assert page.status_code == 502 and page.headers["content-type"].startswith("text/html")
    assert "userinfo" in page.text or "larger than" in page.text
    assert "<script>" not in page.text
    assert_no_session(page)


def test_behind_https_both_cookies_are_secure_and_the_callback_is_https(client, hub):
    https = {"X-Forwarded-Proto": "https"}
    login = client.get("/oauth/login", headers=https, follow_redirects=False)
    state_cookie = login.headers["set-cookie"]
    assert "secure" in state_cookie.lower() and "path=/oauth" in state_cookie.lower()
    assert "max-age=600" in state_cookie.lower() and "httponly" in state_cookie.lower()
    query = parse_qs(urlsplit(login.headers["location"]).query)
    assert query["redirect_uri"] == ["https://testserver/oauth/callback"]
    callback = at_hub(login.headers["location"])
    value = login.cookies[STATE_COOKIE]  # a browser sends a Secure cookie over HTTPS only
    signed = client.get(
        callback, headers={**https, "Cookie": f"{STATE_COOKIE}={value}"}, follow_redirects=False
    )
    assert signed.status_code == 303
    session_cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("lb_session="))
    assert "secure" in session_cookie.lower()


def test_not_set_up_the_oauth_pages_say_so_and_the_sign_in_page_offers_tokens_only(app, serve):
    client = serve(app)
    assert "Sign in with Hugging Face" not in client.get("/signin").text
    for path in ("/oauth/login", "/oauth/callback?code=c&state=s"):
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "not set up on this deployment: sign in with an API token" in page.text


def test_the_oauth_app_is_set_whole_and_its_secret_is_never_shown(monkeypatch):
    with pytest.raises(ValidationError, match="set both"):
        Settings(oauth_client_id="app")
    with pytest.raises(ValidationError, match="must include openid"):
        Settings(oauth_client_id="app", oauth_client_secret="s3cr3t-value", oauth_scopes="profile")
    monkeypatch.setenv("LEADERBOARD_OAUTH_CLIENT_SECRET", "s3cr3t-value")
    with pytest.raises(ConfigurationError) as refused:
        get_settings()
    assert "LEADERBOARD_OAUTH_CLIENT_ID" in refused.value.message and "s3cr3t" not in refused.value.message
    monkeypatch.setenv("LEADERBOARD_OAUTH_CLIENT_ID", "app")
    get_settings.cache_clear()
    shown = CliRunner().invoke(cli, ["settings"])
    assert shown.exit_code == 0 and "LEADERBOARD_OAUTH_CLIENT_SECRET" in shown.output
    assert "s3cr3t" not in shown.output
    assert "s3cr3t" not in repr(get_settings())
