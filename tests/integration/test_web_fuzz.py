"""Random queries and forms at every page, signed in as an admin, on SQLite and PostgreSQL: every answer is a
page (or a redirect), never a server error, never a server path, and the pages keep answering after each."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.storage.tokens import TokenRepository

from .conftest import new_request
from .test_publish import MODELS, evaluate

NAMES = ["sort", "order", "type", "precision", "min_params", "max_params", "search", "chat_template",
         "official", "hide_flagged", "hide_merged", "col", "page", "csrf", "reason", "scope", "model",
         "revision", "weight_type", "model_type", "base_model", "use_chat_template", "token", "back"]  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "1", "yes", "no", "asc", "desc", "Average ⬆️", "BBH", "fullname", "-1", "1e309",
                     "nan", "org/x", "../../etc", "<script>", "%00", "9" * 30, "bfloat16", "chat", "Adapter"]),
)  # fmt: skip
PARAMS = st.lists(st.tuples(st.sampled_from(NAMES), TEXT), max_size=8)
GETS = ["/", "/queue", "/plots", "/submit", "/signin", "/results/{id}", "/requests/{id}", "/results/x"]
POSTS = ["/submit", "/signin", "/signout", "/requests/{id}/vote", "/requests/{id}/unvote",
         "/requests/{id}/cancel", "/requests/{id}/requeue", "/requests/{id}/flag", "/requests/{id}/block",
         "/requests/{id}/nope"]  # fmt: skip


@pytest.fixture
def client(app, clock, tmp_path) -> Iterator[tuple[TestClient, int, str]]:
    request, _ = evaluate(app, clock, tmp_path, *MODELS[0])
    app.requests.create(new_request(model="org/waiting", sha="c" * 40), clock(), None)
    _, token = TokenRepository(app.db).create("root", True, "admin", clock())
    with TestClient(create_api(app)) as http:
        nonce = re.search(r'name="csrf" value="([^"]+)"', http.get("/signin").text).group(1)
        assert http.post("/signin", data={"csrf": nonce, "token": token}).status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', http.get("/submit").text).group(1)
        yield http, request.id, csrf


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=st.sampled_from(GETS + POSTS), params=PARAMS, with_csrf=st.booleans())
def test_no_query_or_form_makes_a_page_fail(client, tmp_path, path, params, with_csrf):
    http, request_id, csrf = client
    url = path.format(id=request_id)
    if path in POSTS:
        form = [*params, *([("csrf", csrf)] if with_csrf else [])]
        answer = http.post(url, data=dict(form), follow_redirects=False)
    else:
        answer = http.get(url, params=params, follow_redirects=False)
    assert answer.status_code < 500, (url, params, answer.text[:500])
    assert str(tmp_path) not in answer.text
    assert http.get("/").status_code in (200, 303)  # the next reader is served
