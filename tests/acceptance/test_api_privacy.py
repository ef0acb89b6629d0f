"""No response of the API shows a path of the server, and a failed run's log is shown to whom it belongs.

The model store, the results folder, the work folder and a leaderboard config all live under one
distinctive folder; the test drives the rejections and not-found answers that touch them, and a real run
that fails quoting a path, then reads every body the server sent back.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from backend.app import App
from backend.domain import Status
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from tests.acceptance.live_api import base_env, cli, live_server

pytestmark = pytest.mark.slow
MARKER = "srv-only-4d2a"  # in every server path of this test, and in no answer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_answer_shows_a_server_path_and_a_failed_runs_log_goes_to_whom_it_belongs(
    database_url: str, tmp_path: Path
) -> None:
    server_root = tmp_path / MARKER
    store = LocalModelStore(server_root / "models")
    build_tiny_model(store, "acme/tiny-chat")
    build_tiny_model(store, "acme/no-license", license=None)
    results, work = server_root / "results", server_root / "work"
    results.mkdir()
    env = base_env(
        database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_RESULTS=str(results),
        LEADERBOARD_WORK_DIR=str(work),
        LEADERBOARD_API_HUB_AUTH="false",
    )
    alice = cli(env, "admin", "token", "create", "alice").strip()
    bob = cli(env, "admin", "token", "create", "bob").strip()
    root = cli(env, "admin", "token", "create", "root", "--admin").strip()
    answers: list[tuple[str, httpx.Response]] = []

    def call(label: str, response: httpx.Response, *statuses: int) -> httpx.Response:
        assert response.status_code in statuses, (label, response.text)
        answers.append((label, response))
        return response

    with (
        live_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        submit = {"model_type": "chat"}
        as_alice = bearer(alice)
        call(
            "absent model",
            http.post("/api/submissions", json={"model": "acme/absent", **submit}, headers=as_alice),
            404,
            422,  # a missing model or revision is a rejection by its rule
        )
        for revision in ("no-such-branch", "0" * 40):
            body = {"model": "acme/tiny-chat", "revision": revision, **submit}
            call(f"revision {revision}", http.post("/api/submissions", json=body, headers=as_alice), 404, 422)
        rejected = call(
            "no license",
            http.post("/api/submissions", json={"model": "acme/no-license", **submit}, headers=as_alice),
            422,
        )
        assert rejected.json()["error"]["rule"] == "license"
        created = call(
            "submitted",
            http.post("/api/submissions", json={"model": "acme/tiny-chat", **submit}, headers=as_alice),
            201,
        )
        rid = created.json()["id"]
        call(
            "duplicate",
            http.post("/api/submissions", json={"model": "acme/tiny-chat", **submit}, headers=as_alice),
            409,
        )
        call("no such request", http.get("/api/requests/999999"), 404)
        call("no such request to vote", http.post("/api/requests/999999/vote", headers=bearer(bob)), 404)
        for fmt in ("json", "csv", "parquet"):
            call(f"nothing published ({fmt})", http.get(f"/api/results?format={fmt}"), 404)
        call("unknown route", http.get("/api/nothing-here"), 404)

        # A real run that fails at once, its error quoting a path of the server.
        missing = server_root / "configs" / "missing-config.yaml"
        settings = Settings(
            database_url=database_url, model_store=store.root, work_dir=work, config=str(missing)
        )
        with App.open(settings, source=store) as app:
            failed = app.worker.work_once("worker-1")
        assert failed is not None and failed.id == rid and failed.status is Status.FAILED
        log_path = str(work / "runs" / f"request-{rid}" / "attempt-1" / "run.log")
        views = {
            name: call(f"detail as {name}", http.get(f"/api/requests/{rid}", headers=bearer(token) if token else None), 200).json()
            for name, token in (("anonymous", None), ("bob", bob), ("alice", alice), ("root", root))
        }  # fmt: skip

    # Everyone reads the same reason, naming the file but not where it is; the history carries it alone.
    reasons = {view["failure_reason"] for view in views.values()}
    assert len(reasons) == 1
    reason = reasons.pop()
    assert "missing-config.yaml" in reason
    for view in views.values():
        assert view["history"][-1]["reason"] == reason
        assert all("last lines" not in (h["reason"] or "") for h in view["history"])
    # The log's tail: for the submitter (file names only) and admins (as it is); its path: admins only.
    assert views["anonymous"]["log_tail"] is None and views["bob"]["log_tail"] is None
    assert views["alice"]["log_tail"] and views["root"]["log_tail"]
    assert [view["log_path"] for view in views.values()] == [None, None, None, log_path]
    assert views["root"]["history"][-1]["log_path"] == log_path
    assert views["alice"]["history"][-1]["log_path"] is None

    # No path of the server in any answer but the admin's log fields.
    admin_view = answers[-1][1].json()
    for field in (admin_view, admin_view["history"][-1]):
        field.pop("log_path")
        field.pop("log_tail")
    bodies = [(label, response.text) for label, response in answers[:-1]]
    bodies.append(("detail as root, less its log fields", str(admin_view)))
    for label, body in bodies:
        assert MARKER not in body and str(tmp_path) not in body, (label, body)
