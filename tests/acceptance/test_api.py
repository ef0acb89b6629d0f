"""The HTTP API for real: `leaderboard serve` in a subprocess, called over HTTP with API tokens (issued by
the CLI) and Hugging Face tokens (verified by a local Hub's whoami)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.app import App
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.tokens import TokenRepository
from tests.acceptance.live_api import FakeHub, base_env, cli, live_server
from tests.integration.conftest import new_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    models = LocalModelStore(tmp_path_factory.mktemp("api-models"))
    build_tiny_model(models, "acme/tiny-chat")
    return models


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub({"hf_alicehubtoken": "alicehub", "hf_adminhubtoken": "hubadmin"})
    yield fake
    fake.close()


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "status"} <= set(error), error
    assert (error["status"], error["code"]) == (status, code), error
    assert error["message"] and "Traceback" not in error["message"]
    return error


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tokens_roles_limits_and_one_error_shape(
    database_url: str, store: LocalModelStore, hub: FakeHub, tmp_path: Path
) -> None:
    env = base_env(
        database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_API_ADMINS="hubadmin",
        LEADERBOARD_API_SUBMISSIONS_PER_HOUR="3",
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="0",
    )
    alice = cli(env, "admin", "token", "create", "alice").strip()
    bob = cli(env, "admin", "token", "create", "bob").strip()
    root = cli(env, "admin", "token", "create", "root", "--admin").strip()
    assert all(t.startswith("lb_") and len(t) > 40 for t in (alice, bob, root))
    invalid = "lb_" + "x" * 43
    used = [
        alice,
        bob,
        root,
        invalid,
        "hf_alicehubtoken",
        "hf_adminhubtoken",
        "hf_notatoken",
        "hf_whilehubdown",
    ]

    with (
        live_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        submission = {"model": "acme/tiny-chat", "model_type": "chat"}
        # No token, a token that is not valid, a header that is not a bearer token: 401.
        error_of(http.post("/api/submissions", json=submission), 401, "unauthorized")
        error_of(http.post("/api/requests/1/vote"), 401, "unauthorized")
        error_of(http.get("/api/admin/tokens"), 401, "unauthorized")
        error_of(http.post("/api/submissions", json=submission, headers=bearer(invalid)), 401, "unauthorized")
        basic = {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
        error_of(http.post("/api/submissions", json=submission, headers=basic), 401, "unauthorized")
        error_of(http.get("/api/requests/1", headers=bearer(invalid)), 401, "unauthorized")

        created = http.post("/api/submissions", json=submission, headers=bearer(alice))
        assert created.status_code == 201, created.text
        request = created.json()
        assert (request["sender"], request["status"], request["votes"]) == ("alice", "PENDING", 1)
        rid = request["id"]

        # A user token on admin endpoints: 403; on another user's vote: only the caller's own vote moves.
        error_of(http.get("/api/admin/tokens", headers=bearer(bob)), 403, "forbidden")
        error_of(
            http.post(f"/api/admin/requests/{rid}/cancel", json={}, headers=bearer(bob)), 403, "forbidden"
        )
        error_of(http.delete(f"/api/requests/{rid}/vote", headers=bearer(bob)), 409, "not_voted")
        assert http.post(f"/api/requests/{rid}/vote", headers=bearer(bob)).json() == {
            "request_id": rid,
            "votes": 2,
            "voted": True,
        }
        error_of(http.post(f"/api/requests/{rid}/vote", headers=bearer(bob)), 409, "already_voted")
        assert http.get(f"/api/requests/{rid}").json()["voters"] == ["alice", "bob"]

        # A rejected submission names the rule and the fix; the duplicate rule answers 409.
        duplicate = error_of(
            http.post("/api/submissions", json=submission, headers=bearer(alice)), 409, "already_submitted"
        )
        assert duplicate["rule"] == "duplicate" and "upvote" in duplicate["fix"]
        invalid_body = error_of(
            http.post(
                "/api/submissions", json={"model": "no-slash", "model_type": "chat"}, headers=bearer(alice)
            ),
            422,
            "invalid_input",
        )
        assert invalid_body["fields"][0]["location"] == ["body", "model"]
        # Per-user submission limit (3 an hour here; a body that fails validation is not an attempt): the
        # 4th attempt of the hour is refused with Retry-After.
        error_of(
            http.post("/api/submissions", json=submission, headers=bearer(alice)), 409, "already_submitted"
        )
        limited = http.post("/api/submissions", json=submission, headers=bearer(alice))
        error_of(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 3600
        # Body limit, unknown route, wrong method: the same shape.
        error_of(
            http.post("/api/submissions", content=b"{" + b" " * 70000 + b"}", headers=bearer(bob)),
            413,
            "payload_too_large",
        )
        error_of(http.get("/api/nothing-here"), 404, "not_found")
        error_of(http.put("/api/queue"), 405, "method_not_allowed")

        # A failed run's reason is public; its log tail is for the submitter and admins.
        with App.open(Settings(database_url=database_url)) as app:
            claimed = app.queue.claim("w1")
            assert claimed is not None and claimed.id == rid
            app.queue.fail(
                rid,
                "w1",
                "the model weights cannot be read",
                transient=False,
                log_path="/runs/1/run.log",
                log_tail="loading\nboom",
            )
        views = {
            name: http.get(f"/api/requests/{rid}", headers=bearer(token) if token else None).json()
            for name, token in (("anonymous", None), ("bob", bob), ("alice", alice), ("root", root))
        }
        assert all(v["failure_reason"] == "the model weights cannot be read" for v in views.values())
        assert all(v["history"][-1]["reason"] == "the model weights cannot be read" for v in views.values())
        assert views["anonymous"]["log_tail"] is None and views["bob"]["log_tail"] is None
        assert views["alice"]["log_tail"] == "loading\nboom" and views["root"]["log_tail"] == "loading\nboom"
        assert [v["log_path"] for v in views.values()] == [None, None, None, "/runs/1/run.log"]
        requeued = http.post(
            f"/api/admin/requests/{rid}/requeue", json={"reason": "fixed"}, headers=bearer(root)
        )
        assert requeued.status_code == 200 and requeued.json()["status"] == "PENDING"

        # Hugging Face tokens: verified with the Hub; Hub users named in LEADERBOARD_API_ADMINS are admins.
        voted = http.post(f"/api/requests/{rid}/vote", headers=bearer("hf_alicehubtoken"))
        assert voted.status_code == 200 and voted.json()["votes"] == 3
        error_of(http.post(f"/api/requests/{rid}/vote", headers=bearer("hf_notatoken")), 401, "unauthorized")
        error_of(http.get("/api/admin/tokens", headers=bearer("hf_alicehubtoken")), 403, "forbidden")
        assert http.get("/api/admin/tokens", headers=bearer("hf_adminhubtoken")).status_code == 200
        calls = hub.calls
        hub.down = True
        error_of(
            http.post(f"/api/requests/{rid}/vote", headers=bearer("hf_whilehubdown")),
            503,
            "identity_unavailable",
        )
        again = http.delete(
            f"/api/requests/{rid}/vote", headers=bearer("hf_alicehubtoken")
        )  # cached: no Hub call
        assert again.status_code == 200 and again.json()["votes"] == 2
        assert hub.calls == calls + 1

        # A revoked token stops working at once.
        tokens = http.get("/api/admin/tokens", headers=bearer(root)).json()
        assert {t["user"] for t in tokens} == {"alice", "bob", "root"} and all(
            "token" not in t for t in tokens
        )
        bob_id = next(t["id"] for t in tokens if t["user"] == "bob")
        assert http.delete(f"/api/admin/tokens/{bob_id}", headers=bearer(root)).json()["revoked_at"]
        error_of(http.post(f"/api/requests/{rid}/vote", headers=bearer(bob)), 401, "unauthorized")

    log = server.log_text()
    assert f"POST /api/requests/{rid}/vote 200" in log and "user=alicehub" in log  # requests are logged
    for token in used:
        assert token not in log, "a token appeared in the server log"


def _clients(users: int) -> list[str]:
    return [f"voter{i:03d}" for i in range(users)]


async def _cast(url: str, token: str, request_ids: list[int], again: int) -> tuple[list[int], httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=120) as http:
        statuses = []
        for rid in request_ids:
            statuses.append((await http.post(f"/api/requests/{rid}/vote")).status_code)
        return statuses, await http.post(f"/api/requests/{again}/vote")


def test_200_concurrent_clients_cast_exact_votes(database_url: str, tmp_path: Path) -> None:
    users = _clients(200)
    with App.open(Settings(database_url=database_url)) as app:
        now = app.clock()
        ids = [
            app.requests.create(new_request(model=f"org/model-{i}", sender="submitter"), now, None).id
            for i in range(5)
        ]
        tokens = TokenRepository(app.db)
        secrets = [tokens.create(user, False, "test", now)[1] for user in users]
    env = base_env(database_url, LEADERBOARD_API_HUB_AUTH="false")
    rng = random.Random(7)

    async def everyone(url: str) -> list[tuple[list[int], httpx.Response]]:
        jobs = []
        for secret in secrets:
            order = ids[:]
            rng.shuffle(order)
            jobs.append(_cast(url, secret, order, rng.choice(ids)))
        return await asyncio.gather(*jobs)

    with live_server(env, tmp_path / "server.log") as server:
        outcomes = asyncio.run(everyone(server.url))
        details = [httpx.get(f"{server.url}/api/requests/{rid}", timeout=60).json() for rid in ids]

    assert [s for statuses, _ in outcomes for s in statuses] == [200] * 1000
    for _, duplicate in outcomes:
        error_of(duplicate, 409, "already_voted")
    for detail in details:
        assert detail["request"]["votes"] == 201  # the submitter's vote and 200 more
        assert sorted(detail["voters"]) == sorted([*users, "submitter"])
    with App.open(Settings(database_url=database_url)) as app:
        assert [app.requests.get(rid).votes for rid in ids] == [201] * 5
        assert sum(len(app.vote_repository.all_votes(rid)) for rid in ids) == 1005


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_runs_the_scheduler_in_the_same_process(
    database_url: str, store: LocalModelStore, tmp_path: Path
) -> None:
    """A submission through the API is dispatched by the scheduler inside `leaderboard serve`; stopping the
    server stops the run and hands the request back to the queue."""
    from backend.evaluation.synthetic import synthesize

    mirror = synthesize(tmp_path / "mirror", rows=2)
    env = base_env(
        database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_DATA_MIRROR=str(mirror),
        LEADERBOARD_WORK_DIR=str(tmp_path / "work"),
        LEADERBOARD_EVAL_DEVICE="cpu",
        LEADERBOARD_SCHEDULER_POLL_SECONDS="1",
        LEADERBOARD_API_HUB_AUTH="false",
    )
    token = cli(env, "admin", "token", "create", "alice").strip()
    with live_server(env, tmp_path / "server.log", "--scheduler") as server:
        created = httpx.post(
            f"{server.url}/api/submissions",
            json={"model": "acme/tiny-chat", "model_type": "chat"},
            headers=bearer(token),
            timeout=60,
        )
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        deadline = time.monotonic() + 120
        while (status := httpx.get(f"{server.url}/api/requests/{rid}", timeout=60).json())["request"][
            "status"
        ] == "PENDING":
            assert time.monotonic() < deadline, "the scheduler never dispatched the request"
            time.sleep(0.5)
        # The run (39 subtasks) takes far longer than the polling: it is stopped mid-run below.
        assert status["request"]["status"] == "RUNNING" and status["request"]["attempts"] == 1
    assert "scheduler: on" in server.log_text()
    with App.open(Settings(database_url=database_url)) as app:
        request = app.requests.get(rid)
        history = app.requests.history(rid)
    assert request.status.value == "PENDING", request  # stopped mid-run: handed back to the queue
    assert history[-1].reason is not None and "stopped during the run" in history[-1].reason
