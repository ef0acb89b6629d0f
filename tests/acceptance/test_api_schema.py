"""schemathesis against a live `leaderboard serve`: every operation of the OpenAPI spec, fuzzed with valid
and invalid input, as an admin (the checks also probe without a token and with a wrong one). No response
may be a 5xx, and every response must conform to the spec: status codes, content types, bodies, headers.

The database holds a few requests, finished evaluations and a published table, so reads have something to
return; the admin token has an id no generated path parameter is likely to hit, so revoking tokens at
random does not lock the run out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import update

from backend.app import App
from backend.domain import ModelType, Precision
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings
from backend.storage.schema import api_tokens
from backend.storage.tokens import TokenRepository
from tests.acceptance.live_api import Server, base_env, live_server
from tests.conftest import _postgres_schema_url
from tests.integration.conftest import Clock, new_request
from tests.integration.test_publish import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("api-schema")]

ADMIN_TOKEN_ID = 1_000_003
# Schema-valid input these operations may still refuse with 422, by design: a submission that fails a rule
# (no such file on the Hub, no license, ...), a repo id with '--' or '..' (the spec's regex dialect cannot
# say so). Every other operation must accept all schema-valid input. A prompt over the arena's limit in
# characters (its maxLength) may be over LEADERBOARD_API_MAX_BODY_BYTES in bytes first: refused with 413.
CONFIG = schemathesis.config.SchemathesisConfig.from_str(
    """
[[operations]]
include-path-regex = "^/api/(submissions|admin/(flags|blocklist|official-providers))$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path-regex = "^/api/arena/battles"
checks.negative_data_rejection.expected-statuses = [
  "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"""
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("api-schema")
    if request.param == "sqlite":
        yield from _serve(root, f"sqlite:///{root / 'leaderboard.db'}")
    else:
        for database_url in _postgres_schema_url():
            yield from _serve(root, database_url)


def _serve(root: Path, database_url: str) -> Iterator[tuple[Server, str]]:
    store = LocalModelStore(root / "models")
    build_tiny_model(store, "acme/tiny-chat")
    results = root / "results"
    clock = Clock()
    with App.open(Settings(database_url=database_url, results=str(results))) as app:
        app.clock = clock
        for model, precision in (("org-a/alpha", Precision.BFLOAT16), ("org-b/beta", Precision.FLOAT16)):
            evaluate(app, clock, root, model, precision, ModelType.CHAT, 3600.0)
        for i in range(3):
            app.requests.create(new_request(model=f"org-c/pending-{i}"), clock(), None)
        app.publish_results()
        record, admin = TokenRepository(app.db).create("root", True, "test", clock())
        with app.db.transaction() as conn:
            conn.execute(update(api_tokens).where(api_tokens.c.id == record.id).values(id=ADMIN_TOKEN_ID))
    env = base_env(
        database_url,
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_RESULTS=str(results),
        LEADERBOARD_API_HUB_AUTH="false",
        LEADERBOARD_API_VOTES_PER_MINUTE="100000",
        LEADERBOARD_API_SUBMISSIONS_PER_HOUR="100000",
    )
    with live_server(env, root / "server.log") as server:
        yield server, admin


@pytest.fixture(scope="module")
def api_schema(live: tuple[Server, str]) -> schemathesis.BaseSchema:
    server, _ = live
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_spec_and_never_fails(
    case: schemathesis.Case, live: tuple[Server, str]
) -> None:
    _, admin = live
    case.call_and_validate(headers={"Authorization": f"Bearer {admin}"})


def test_the_spec_documents_every_route(
    live: tuple[Server, str], api_schema: schemathesis.BaseSchema
) -> None:
    import httpx

    server, _ = live
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert {
        ("POST", "/api/submissions"),
        ("GET", "/api/queue"),
        ("POST", "/api/requests/{request_id}/vote"),
        ("DELETE", "/api/requests/{request_id}/vote"),
        ("GET", "/api/requests/{request_id}"),
        ("GET", "/api/leaderboard"),
        ("GET", "/api/results"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/api/admin/tokens"),
    } <= operations
    # Every operation documents the one error shape for its errors.
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/healthz":
                    schema_ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert schema_ref.endswith("/ErrorBody"), (method, path, status)
    assert len(server.log.read_text()) > 0


def test_metrics_report_the_queue_evaluations_and_api_errors(live: tuple[Server, str]) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    server, _ = live
    assert httpx.post(f"{server.url}/api/submissions", json={}, timeout=60).status_code == 401
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    queue = {
        dict(labels)["status"]: v for (name, labels), v in samples.items() if name == "leaderboard_requests"
    }
    assert set(queue) == {"PENDING", "RUNNING", "FINISHED", "FAILED", "CANCELLED"}
    with App.open(Settings(database_url=server.env["LEADERBOARD_DATABASE_URL"])) as app:
        everything = app.requests.all()
    assert sum(queue.values()) == len(everything)
    assert queue["FINISHED"] == sum(r.status.value == "FINISHED" for r in everything)
    assert samples[("leaderboard_running_jobs", ())] == queue["RUNNING"]
    assert samples[("leaderboard_evaluation_duration_seconds_count", ())] == 2  # the two stored runs
    assert samples[("leaderboard_evaluation_duration_seconds_sum", ())] == 60.0
    assert samples[("leaderboard_evaluation_duration_seconds_bucket", (("le", "60.0"),))] == 2
    assert samples[("leaderboard_api_errors_total", (("code", "unauthorized"),))] >= 1
    assert samples[("leaderboard_database_up", ())] == 1
