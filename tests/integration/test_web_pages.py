"""The pages, served by the same app as the API, on SQLite and PostgreSQL: the leaderboard and the queue,
their view in the URL, every value escaped, and a bad query answered with a page that says what is wrong.
(The browser tests of issue 13 drive these pages in Chromium.)"""

from __future__ import annotations

import re
from html import unescape

import pytest
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.domain import ModelType, Precision
from backend.publish.files import task_of
from backend.web.view import CSP

from .conftest import new_request
from .test_publish import MODELS, evaluate


@pytest.fixture
def client(app):
    with TestClient(create_api(app)) as http:
        yield http


def models_in(html: str) -> list[str]:
    """The model names of the table's rows, in order."""
    return [unescape(m) for m in re.findall(r'<td class="model"><a [^>]*>([^<]*)</a>', html)]


def test_the_leaderboard_page_lists_the_latest_results_best_average_first(app, clock, tmp_path, client):
    stored = [evaluate(app, clock, tmp_path, *m) for m in MODELS]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
    by_average = sorted(stored, key=lambda s: -s[1].scores["Average ⬆️"])
    assert models_in(page.text) == [request.model for request, _ in by_average]
    best = by_average[0][1]
    bbh = f'{best.scores["BBH"]:.2f}<span class="stderr"> ± {best.stderrs["BBH stderr"]:.2f}</span>'
    assert bbh in page.text  # each score with its standard error (where the harness reports one)
    for fmt in ("parquet", "csv", "json"):
        assert f'href="/api/results?format={fmt}"' in page.text
    assert "<script" not in page.text  # reads without JavaScript
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_the_view_lives_in_the_url(app, clock, tmp_path, client):
    for m in MODELS:
        evaluate(app, clock, tmp_path, *m)
    ascending = client.get("/", params={"sort": "fullname", "order": "asc"})
    descending = client.get("/", params={"sort": "fullname"})
    assert models_in(ascending.text) == ["org-a/alpha", "org-b/beta", "org-c/gamma"]
    assert models_in(descending.text) == ["org-c/gamma", "org-b/beta", "org-a/alpha"]
    assert models_in(client.get("/", params={"precision": "float16"}).text) == ["org-b/beta"]
    assert models_in(client.get("/", params={"search": "GAM"}).text) == ["org-c/gamma"]
    assert models_in(client.get("/", params={"type": ModelType.MERGE.value}).text) == ["org-c/gamma"]
    assert models_in(client.get("/", params={"max_params": "0.0001"}).text) == []
    # The links of a filtered view keep the filter: a column's sort link and the form's state.
    filtered = client.get("/", params={"precision": "bfloat16", "search": "a"}).text
    assert 'href="/?sort=IFEval&amp;order=desc&amp;precision=bfloat16&amp;search=a"' in filtered
    assert '<option value="bfloat16" selected>' in filtered


def test_filters_for_chat_template_official_providers_flags_and_merges(app, clock, tmp_path, client):
    for m in MODELS:
        evaluate(app, clock, tmp_path, *m)
    app.moderation.official_providers.add("org-a", "admin", clock())
    app.moderation.flags.add("org-b/beta", "admin", clock(), "contaminated")
    everyone = ["org-a/alpha", "org-b/beta", "org-c/gamma"]

    def shown(**params: str) -> list[str]:
        return sorted(models_in(client.get("/", params=params).text))

    assert shown() == everyone
    assert shown(official="1") == ["org-a/alpha"]
    assert shown(hide_flagged="1") == ["org-a/alpha", "org-c/gamma"]
    assert shown(hide_merged="1") == ["org-a/alpha", "org-b/beta"]  # gamma is a merge
    assert shown(hide_flagged="1", hide_merged="1") == ["org-a/alpha"]
    assert shown(chat_template="no") == everyone and shown(chat_template="yes") == []
    # The same filters in the API, over the same service.
    api = client.get("/api/leaderboard", params={"hide_flagged": "true", "official": "true"}).json()
    assert [r["fullname"] for r in api["rows"]] == ["org-a/alpha"]
    page = client.get("/", params={"hide_merged": "1"}).text
    assert '<input type="checkbox" name="hide_merged" value="1" checked>' in page
    assert 'href="/?sort=IFEval&amp;order=desc&amp;hide_merged=1"' in page  # kept by the sort links


def header_cells(html: str) -> list[str]:
    head = html.split('<table class="board">', 1)[1].split("</thead>", 1)[0]
    return [unescape(re.sub(r"<[^>]+>|[▼▲]", "", h)).strip() for h in re.findall(r"<th>(.*?)</th>", head)]


def test_the_column_picker_offers_every_column_and_keeps_the_choice_in_the_url(app, clock, tmp_path, client):
    from backend.publish.table import REFERENCE_COLUMNS, table_columns

    _, evaluation = evaluate(app, clock, tmp_path, *MODELS[1])
    default = client.get("/").text
    benchmarks = [b.column for b in app.config.benchmarks]
    expected = [
        "Rank",
        "Model",
        "Average ⬆️",
        *benchmarks,
        "Type",
        "#Params (B)",
        "Precision",
        "Chat Template",
    ]
    assert header_cells(default) == expected
    offered = re.findall(r'<input type="checkbox" name="col" value="([^"]+)"', default)
    assert sorted(unescape(o) for o in offered) == sorted(
        c for c in table_columns(app.config) if c != "fullname"
    )
    assert set(REFERENCE_COLUMNS) - {"fullname"} <= {unescape(o) for o in offered}  # all 36 but the model
    chosen = ["BBH Raw", "BBH Raw stderr", "CO₂ cost (kg)", "Config hash", "Harness version"]
    page = client.get("/", params=[("col", c) for c in chosen]).text
    assert header_cells(page) == ["Rank", "Model", *chosen]
    raw = evaluation.scores["BBH Raw"]
    assert f"{raw:.2f}" in page and evaluation.config_hash in page and "0.4.13" in page
    # A sort link keeps the chosen columns; the picker's form shows them checked.
    assert "col=BBH+Raw&amp;col=BBH+Raw+stderr" in page
    assert '<input type="checkbox" name="col" value="Config hash" checked>' in page
    for bad in (["fullname"], ["nope"]):
        refused = client.get("/", params=[("col", c) for c in bad])
        assert refused.status_code == 400 and "col must name columns of the table" in unescape(refused.text)


def test_ranks_are_ranges_where_scores_are_tied_within_their_errors(app, clock, tmp_path, client):
    for m in MODELS:
        evaluate(app, clock, tmp_path, *m)
    rows = app.leaderboard.ranked()
    average = app.config.average.column
    html = client.get("/").text
    ranks = re.findall(r'<td class="rank">([^<]*)</td>', html)
    assert len(ranks) == len(rows)
    for row, shown in zip(rows, ranks, strict=True):
        value, error = row[average], row[f"{average} stderr"] or 0.0
        above = sum(1 for r in rows if r[average] - (r[f"{average} stderr"] or 0.0) > value + error)
        not_below = sum(1 for r in rows if r[average] + (r[f"{average} stderr"] or 0.0) >= value - error)
        assert shown.replace("–", "-") == (
            str(above + 1) if above + 1 == not_below else f"{above + 1}-{not_below}"
        )


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"sort": "nope"}, "sort must be a column of the table"),
        ({"order": "sideways"}, "order must be asc or desc"),
        ({"page": "0"}, "page must be a whole number from 1"),
        ({"page": "9" * 40}, "page must be a whole number from 1"),
        ({"min_params": "abc"}, "min_params must be a number"),
        ({"max_params": "nan"}, "max_params must be a number"),
        ({"type": "robot"}, "type must be one of"),
        ({"precision": "float8"}, "precision must be one of"),
        ({"search": "x" * 201}, "search must be at most 200 characters"),
        ({"chat_template": "maybe"}, "chat_template must be yes, no or left out"),
        ({"hide_flagged": "on"}, "hide_flagged must be 1 (on) or left out"),
    ],
)
def test_a_view_that_is_not_valid_is_a_page_saying_why(client, params, problem):
    page = client.get("/", params=params)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert problem in unescape(page.text) and 'href="/"' in page.text


def test_every_value_from_a_repo_or_a_user_is_escaped(app, clock, tmp_path, client):
    """Names and failure reasons are text: a `<script>` in them renders inert."""
    evil = "org/<script>alert(1)</script>"  # data an older version could have let in
    evaluate(app, clock, tmp_path, evil, Precision.BFLOAT16, ModelType.CHAT, 1.0)
    failing = app.requests.create(new_request(model="org/failing", sha="b" * 40), clock(), None)
    app.queue.claim("w")
    app.queue.fail(failing.id, "w", '<img src=x onerror="alert(2)"> broke', transient=False)
    for path in ("/", "/queue"):
        page = client.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/").text
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt; broke" in client.get("/queue").text


def test_the_queue_page_ranks_pending_requests_as_the_queue_claims_them(app, clock, client):
    low = app.requests.create(new_request(model="org/low", sha="1" * 40, sender="a"), clock(), None)
    high = app.requests.create(new_request(model="org/high", sha="2" * 40, sender="b"), clock(), None)
    running = app.requests.create(new_request(model="org/running", sha="3" * 40, sender="c"), clock(), None)
    for voter in ("v1", "v2", "v3"):
        app.votes.vote(running.id, voter)
    assert app.queue.claim("local:1").id == running.id
    app.votes.vote(high.id, "v1")
    page = client.get("/queue").text
    pending = page.split("<h2>Pending</h2>", 1)[1].split("</section>", 1)[0]
    assert pending.index("org/high") < pending.index("org/low")  # votes first, as claims go
    assert f'<a href="/requests/{low.id}">{low.id}</a>' in pending
    running_section = page.split("<h2>Running</h2>", 1)[1].split("</section>", 1)[0]
    assert "org/running" in running_section and "<td>local</td>" in running_section  # not started yet
    app.queue.started(running.id, "local:1", "local-100-4242")
    slurm = app.requests.create(new_request(model="org/on-slurm", sha="4" * 40, sender="d"), clock(), None)
    for voter in ("v1", "v2", "v3", "v4"):
        app.votes.vote(slurm.id, voter)
    assert app.queue.claim("slurm:x").id == slurm.id
    app.queue.started(slurm.id, "slurm:x", "778899")
    running_section = client.get("/queue").text.split("<h2>Running</h2>", 1)[1].split("</section>", 1)[0]
    assert (
        "<td>local, process 4242</td>" in running_section and "<td>Slurm job 778899</td>" in running_section
    )
    assert "Slurm job 778899" in client.get(f"/requests/{slurm.id}").text


def test_a_result_page_shows_scores_with_errors_subtasks_provenance_and_versions(
    app, clock, tmp_path, client
):
    request, evaluation = evaluate(app, clock, tmp_path, *MODELS[0])
    board = client.get("/").text
    assert f'href="/results/{request.id}"' in board  # the table links each model to its result page
    page = client.get(f"/results/{request.id}")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    html = page.text
    assert f"{evaluation.scores['BBH']:.4f}" in html and f"{evaluation.stderrs['BBH stderr']:.4f}" in html
    assert html.count('<rect class="bar"') == len(app.config.benchmarks)  # the plot: a bar per benchmark
    assert html.count('<line class="error"') == 5  # and an error bar where there is a stderr (not IFEval)
    subtasks = sum(len(b.subtasks) * len(b.metrics) for b in app.config.benchmarks)
    assert html.count("<tr><td>leaderboard_") == subtasks  # every subtask's raw metric
    assert "lm-eval 0.4.13" in html and evaluation.config_hash in html
    assert f"{3600 / 3600 * 5.6 * 269.8 / 1000:.4f}" in html  # CO₂ of its hour, by the reference's formula
    assert unescape(html).count(request.sha) >= 2 and "leaderboard run org-a/alpha --revision" in html
    assert str(tmp_path) not in html and "/tmp/" not in html  # no path of the server
    assert "the run's own scores" in unescape(html)


def test_each_result_version_says_what_its_re_score_changed_and_links_its_published_files(
    app, clock, tmp_path, client
):
    from dataclasses import replace

    from .test_publish import _samples

    (tmp_path / "rescored").mkdir()
    request, first = evaluate(app, clock, tmp_path, *MODELS[0])
    bbh_raw = first.scores["BBH Raw"]
    record = {
        "benchmark": "bbh",
        "from_version": 1,
        "version": 2,
        "rescored_at": clock().isoformat(),
        "scorers": {"leaderboard_bbh_boolean_expressions": "exact_match"},
        "harness_version": "0.4.13",
        "command": "leaderboard rescore --benchmark bbh --models org-a/alpha",
        "samples_files": [_samples(tmp_path / "rescored", "leaderboard_bbh_boolean_expressions")],
    }
    second = app.evaluations.add_version(
        replace(
            first,
            scores={**first.scores, "BBH Raw": bbh_raw / 2},
            provenance={**first.provenance, "rescores": [record]},
            version=2,
            recorded_at=clock(),
            rescored_from=first.id,
            id=None,
        )
    )
    html = client.get(f"/results/{request.id}").text
    text = unescape(html)
    assert "re-scored bbh from the stored samples of version 1" in text
    assert f"BBH Raw: {bbh_raw:.4f} → {bbh_raw / 2:.4f}" in text  # what it changed, and only that
    assert text.count(" → ") == 1 and str(tmp_path) not in html
    links = re.findall(r'href="(/api/results/files/[^"]+)"', html)
    first_tasks = {task_of(f) for f in first.provenance["samples_files"]}
    assert len(links) == 2 + len(first_tasks) + 1  # each version's results file, its new details files
    results_links = [unescape(link) for link in links if "/results_" in link]
    assert len(results_links) == 2
    details = [unescape(link) for link in links if "/details/" in link]
    assert any("leaderboard_bbh_boolean_expressions/bfloat16_" in d for d in details)
    assert client.get(results_links[-1]).status_code == 404  # not published yet: says so
    app.publish_results()
    for link in results_links + details:
        got = client.get(link)
        assert got.status_code == 200, link
        assert "attachment" in got.headers["content-disposition"]
    latest = client.get(results_links[-1]).json()
    assert latest["leaderboard"]["version"] == second.version == 2
    for bad in ("../../etc/passwd", "results/x.txt", "tasks/a/b.json", "details/a/b/c.json"):
        refused = client.get(f"/api/results/files/{bad}")
        assert refused.status_code in (404, 422), bad  # never a file outside the dataset


def test_a_request_page_shows_its_history_and_voters(app, clock, client):
    request = app.requests.create(new_request(model="org/asked", sender="alice"), clock(), None)
    app.votes.vote(request.id, "bob")
    page = client.get(f"/requests/{request.id}").text
    assert "Request" in page and "org/asked" in page and "PENDING by alice" in page
    assert "<li>alice</li>" in page and "<li>bob</li>" in page
    assert f'href="/requests/{request.id}"' in client.get("/queue").text


@pytest.mark.parametrize(
    "path", ["/results/999", "/results/abc", "/results/-1", "/requests/0", "/requests/9" + "9" * 30]
)
def test_a_page_for_nothing_is_a_404_page(client, path):
    page = client.get(path)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "no re" in page.text


def token_for(app, user: str) -> tuple[int, str]:
    from backend.storage.tokens import TokenRepository

    record, token = TokenRepository(app.db).create(user, False, "admin", app.clock())
    return record.id, token


def sign_in(client, token: str, **headers: str):
    form = client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post(
        "/signin", data={"csrf": csrf, "token": token}, headers=headers, follow_redirects=False
    )


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_sign_in_with_an_api_token_then_vote_and_withdraw_from_the_queue_page(app, clock, client):
    request = app.requests.create(new_request(model="org/pending", sender="alice"), clock(), None)
    _, token = token_for(app, "bob")
    signed = sign_in(client, token)
    assert signed.status_code == 303 and signed.headers["location"] == "/queue"
    cookie = signed.headers["set-cookie"].lower()
    assert "lb_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP here; behind HTTPS it is Secure (below)
    assert token not in signed.headers["set-cookie"]  # the token is never in the cookie
    page = client.get("/queue").text
    assert '<span class="user">bob</span>' in page and ">Vote</button>" in page
    voted = client.post(f"/requests/{request.id}/vote", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert voted.status_code == 303 and app.queue.get(request.id).votes == 2
    page = client.get("/queue").text
    assert "Withdraw my vote" in page  # their current vote is shown
    again = client.post(f"/requests/{request.id}/vote", data={"csrf": csrf_of(page)})
    assert again.status_code == 409 and "already voted" in unescape(again.text)
    assert app.queue.get(request.id).votes == 2
    withdrawn = client.post(
        f"/requests/{request.id}/unvote", data={"csrf": csrf_of(page)}, follow_redirects=False
    )
    assert withdrawn.status_code == 303 and app.queue.get(request.id).votes == 1
    out = client.post("/signout", data={"csrf": csrf_of(client.get("/queue").text)}, follow_redirects=False)
    assert out.status_code == 303
    assert "Sign in" in client.get("/queue").text


def test_every_state_change_needs_the_forms_csrf_token(app, clock, client):
    request = app.requests.create(new_request(model="org/pending", sender="alice"), clock(), None)
    _, token = token_for(app, "bob")
    # Signing in without the sign-in form's token (another site posting it) is refused.
    forged = client.post("/signin", data={"csrf": "x", "token": token}, follow_redirects=False)
    assert forged.status_code == 403 and "lb_session" not in forged.headers.get("set-cookie", "")
    sign_in(client, token)
    for data in ({}, {"csrf": ""}, {"csrf": "not-the-token"}):
        refused = client.post(f"/requests/{request.id}/vote", data=data)
        assert refused.status_code == 403 and "came from another site" in refused.text
    refused = client.post("/signout", data={})
    assert refused.status_code == 403
    assert app.queue.get(request.id).votes == 1  # nothing changed


def test_a_bad_token_a_forged_cookie_and_a_revoked_token_sign_no_one_in(app, clock, client):
    from backend.storage.tokens import TokenRepository

    request = app.requests.create(new_request(model="org/pending", sender="alice"), clock(), None)
    bad = sign_in(client, "lb_not-a-real-token")
    assert (
        bad.status_code == 401
        and "not valid" in bad.text
        and "lb_session" not in bad.headers.get("set-cookie", "")
    )
    anonymous = client.post(f"/requests/{request.id}/vote", data={"csrf": "x"})
    assert anonymous.status_code == 401 and "sign in to vote" in anonymous.text
    token_id, token = token_for(app, "bob")
    sign_in(client, token)
    assert '<span class="user">bob</span>' in client.get("/queue").text
    payload, signature = client.cookies["lb_session"].split(".")
    client.cookies.clear()
    client.cookies.set("lb_session", f"{payload}.{signature}")
    assert '<span class="user">bob</span>' in client.get("/queue").text  # the cookie as it was still works
    client.cookies.clear()
    client.cookies.set("lb_session", payload[:-4] + "AAAA." + signature)  # edited: the signature fails
    assert '<span class="user">' not in client.get("/queue").text
    sign_in(client, token)
    TokenRepository(app.db).revoke(token_id, clock())
    assert '<span class="user">' not in client.get("/queue").text  # revoking the token signs them out
    assert app.queue.get(request.id).votes == 1


def test_behind_https_the_session_cookie_is_secure(app, client):
    _, token = token_for(app, "bob")
    signed = sign_in(client, token, **{"X-Forwarded-Proto": "https"})
    assert "secure" in signed.headers["set-cookie"].lower()


def test_sign_in_attempts_are_limited_per_address(app, database_url, clock):
    from backend.app import App
    from backend.settings import Settings

    limited = App.open(Settings(database_url=database_url, api_signins_per_minute=3, api_hub_auth=False))
    limited.clock = clock
    try:
        with TestClient(create_api(limited)) as http:
            answers = [sign_in(http, "not-a-token").status_code for _ in range(4)]
            assert answers == [401, 401, 401, 429]  # the fourth guess is refused before it is checked
            _, token = token_for(limited, "bob")
            assert sign_in(http, token).status_code == 429  # even a good token, until the window passes
    finally:
        limited.close()
