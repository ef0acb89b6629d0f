"""The leaderboard's table is built once and kept between page loads: whatever it shows that changes (a new
result, a re-score, a flag, an official provider, the Hub metadata) is on the next page, also when another
process (the worker, the scheduler, an admin's CLI) wrote it. Here that process is a second App, with its
own engine, over the same database; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from html import unescape

import pytest
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.app import App
from backend.domain import ModelType, Precision
from backend.services.leaderboard import LeaderboardService, Query, latest_rows, table_context
from backend.settings import Settings
from backend.storage.model_metadata import ModelMetadata

from .conftest import new_request
from .test_publish import MODELS, evaluate


@pytest.fixture
def reader(database_url: str, app: App) -> Iterator[App]:
    """The server's process: its own App (and table cache) over the database ``app`` writes to."""
    served = App.open(Settings(database_url=database_url))
    served.clock = app.clock
    yield served
    served.close()


@pytest.fixture
def client(reader: App) -> Iterator[TestClient]:
    with TestClient(create_api(reader)) as http:
        yield http


def models_in(html: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'<td class="model"><a [^>]*>([^<]*)</a>', html)]


def flagged_in(html: str) -> list[str]:
    return [
        unescape(m) for m in re.findall(r'>([^<]*)</a> <a class="hub"[^>]*>↗</a> <span class="flag">', html)
    ]


def api_rows(client: TestClient) -> dict[str, dict]:
    page = client.get("/api/leaderboard", params={"limit": 100}).json()
    return {row["fullname"]: row for row in page["rows"]}


def fresh_rows(app: App) -> list[dict]:
    """The table as the code before the cache built it: every latest result with its request, from scratch."""
    by_id = {r.id: r for r in app.requests.all()}
    pairs = [(e, by_id[e.request_id]) for e in app.evaluations.latest(app.config.name)]
    return latest_rows(pairs, app.config, table_context(app.moderation, app.model_metadata))


def test_a_new_result_a_rescore_and_moderation_show_on_the_next_page(app, clock, tmp_path, client, reader):
    alpha, _ = evaluate(app, clock, tmp_path, *MODELS[0])
    assert models_in(client.get("/").text) == ["org-a/alpha"]  # the table is built and kept

    beta, _ = evaluate(app, clock, tmp_path, *MODELS[1])
    assert set(models_in(client.get("/").text)) == {"org-a/alpha", "org-b/beta"}

    top = max(alpha.id, beta.id, key=lambda i: reader.evaluations.get(i, app.config.name).scores["Average ⬆️"])
    low = beta if top == alpha.id else alpha
    low_result = app.evaluations.get(low.id, app.config.name)
    rescored = replace(
        low_result,
        id=None,
        version=2,
        scores={**low_result.scores, "Average ⬆️": 99.0},
        recorded_at=clock(),
        rescored_from=low_result.id,
    )
    app.evaluations.add_version(rescored)  # a re-score: the same request, a new version
    assert models_in(client.get("/").text)[0] == low.model
    assert api_rows(client)[low.model]["Result version"] == 2

    app.admin.flag("org-b/beta", "admin", "contaminated")
    assert flagged_in(client.get("/").text) == ["org-b/beta"]
    # The clock does not move: a flag removed and another added at the same instant still shows.
    app.admin.unflag("org-b/beta")
    app.admin.flag("org-a/alpha", "admin", "contaminated")
    assert flagged_in(client.get("/").text) == ["org-a/alpha"]

    app.admin.add_official_provider("org-b", "admin")
    assert api_rows(client)["org-b/beta"]["Official Providers"] is True
    app.admin.remove_official_provider("org-b")
    assert api_rows(client)["org-b/beta"]["Official Providers"] is False


def test_hub_metadata_refreshed_by_the_scheduler_shows_on_the_next_page(app, clock, tmp_path, client):
    evaluate(app, clock, tmp_path, *MODELS[0])
    assert api_rows(client)["org-a/alpha"]["Hub ❤️"] == 0  # never refreshed
    app.model_metadata.save(ModelMetadata("org-a/alpha", 7, True, "apache-2.0", clock()))
    assert api_rows(client)["org-a/alpha"]["Hub ❤️"] == 7
    # Same instant, same likes: only the license changed.
    app.model_metadata.save(ModelMetadata("org-a/alpha", 7, True, "mit", clock()))
    assert api_rows(client)["org-a/alpha"]["Hub License"] == "mit"
    app.model_metadata.save(ModelMetadata("org-a/alpha", 7, False, "mit", clock()))
    assert api_rows(client)["org-a/alpha"]["Available on the hub"] is False
    # A refresh that changes nothing shown leaves the table as it is.
    before = app.model_metadata.stamp()
    clock.advance(3600)
    app.model_metadata.save(ModelMetadata("org-a/alpha", 7, False, "mit", clock()))
    assert app.model_metadata.stamp() == before


def test_the_kept_table_is_the_table_built_from_scratch(app, clock, tmp_path, reader):
    """After every kind of change, read in small steps (each new result alone), the served rows, their
    order and their filters are what a build from scratch gives."""
    board: LeaderboardService = reader.leaderboard
    assert board.rows() == []
    for model in MODELS:
        evaluate(app, clock, tmp_path, *model)
        assert board.rows() == fresh_rows(app)
    app.admin.flag("org-c/gamma", "admin", "contaminated")
    app.model_metadata.save(ModelMetadata("org-b/beta", 3, True, None, clock()))
    assert board.rows() == fresh_rows(app)
    evaluate(app, clock, tmp_path, "org-d/delta", Precision.FLOAT16, ModelType.CHAT, 60.0)
    assert board.rows() == fresh_rows(app)
    from_scratch = LeaderboardService(
        app.config, app.evaluations, app.requests, app.moderation, app.model_metadata
    )
    for sort, descending in (("Average ⬆️", True), ("fullname", False), ("#Params (B)", True)):
        query = Query(sort, descending, precision=Precision.BFLOAT16)
        assert board.query(query, 2, 1) == from_scratch.query(query, 2, 1)
    rows = board.rows()
    rows[0]["fullname"] = "edited by a caller"  # callers get copies: the kept table is untouched
    assert board.rows() == fresh_rows(app)


def test_the_votes_of_a_user_on_a_page_are_read_at_once(app, clock):
    ids = [
        app.requests.create(new_request(model=f"org/m{i}", sha=f"{i:040x}", sender="alice"), clock(), None).id
        for i in range(6)
    ]
    for request_id in ids[::2]:
        app.votes.vote(request_id, "bob")
    votes = app.vote_repository
    per_row = {i for i in ids if "bob" in {v.user for v in votes.all_votes(i)}}
    assert votes.voted("bob", ids) == per_row == set(ids[::2])
    assert votes.voted("alice", ids) == set(ids)  # the submitter's own vote
    assert votes.voted("carol", ids) == set() and votes.voted("bob", []) == set()
