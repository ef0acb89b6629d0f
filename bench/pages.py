"""The pages at scale, on SQLite and on PostgreSQL: the leaderboard (``/``) over 10,000 evaluated models and
the queue (``/queue``) over 100,000 pending requests, anonymous and signed in.

Setup bulk-loads one database (Core executemany in large batches; not measured): finished requests of
varied types, precisions and sizes whose evaluations carry the harness output of a real run of the pinned
harness (tests/fixtures/results, as bench.publishing stores them), the pending queue with its votes (the
signed-in user's among them), and some running and failed requests. What is measured is each GET through
the real app (starlette's TestClient over ``create_api``), from the request to the whole body read: the
views a reader asks for (sorted by several columns both ways, filtered, searched, later pages), each timed
on its own, cases interleaved; then the first page after a new result and after a flag (the cached table is
rebuilt), which are reported beside the targets.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from starlette.testclient import TestClient

from backend.api.app import create_api
from backend.app import App
from backend.domain import ModelType, Precision, Status, WeightType
from backend.leaderboards.config import LeaderboardConfig, config_hash, load_config
from backend.leaderboards.normalize import normalize, standard_errors
from backend.settings import Settings
from backend.storage.evaluations import Evaluation
from backend.storage.requests import NewRequest
from backend.storage.schema import evaluations, requests, votes
from backend.storage.tokens import TokenRepository
from bench.databases import fresh_database
from bench.publishing import RESULTS_FIXTURE, provenance
from bench.stats import latency_ms, target

SIZES: dict[str, dict[str, int]] = {
    "full": {"models": 10_000, "pending": 100_000, "running": 20, "failed": 2_000, "repeats": 20,
             "rebuilds": 3},
    "tiny": {"models": 120, "pending": 300, "running": 3, "failed": 10, "repeats": 2, "rebuilds": 1},
}  # fmt: skip
BATCH = 5_000
TARGET_PAGE_P95_MS = 150.0
TARGET_FIRST_PAGE_BYTES = 200_000
TARGET_QUEUE_P95_MS = 150.0
USER = "bench-reader"
PARAMS_B = (0.5, 1.5, 3.0, 7.2, 8.0, 13.0, 14.0, 32.0, 70.0, 72.0, None)


def leaderboard_views(pages: int) -> dict[str, dict[str, str]]:
    """The views timed: each a name and the page's query parameters."""
    return {
        "first page": {},
        "IFEval asc": {"sort": "IFEval", "order": "asc"},
        "BBH desc": {"sort": "BBH"},
        "MATH Lvl 5 asc": {"sort": "MATH Lvl 5", "order": "asc"},
        "model asc": {"sort": "fullname", "order": "asc"},
        "params desc": {"sort": "#Params (B)"},
        "type chat": {"type": ModelType.CHAT.value},
        "precision float16": {"precision": Precision.FLOAT16.value},
        "params 3 to 14": {"min_params": "3", "max_params": "14"},
        "search": {"search": "model-12"},
        "all filters": {
            "type": ModelType.FINE_TUNED.value,
            "precision": Precision.BFLOAT16.value,
            "min_params": "1",
            "max_params": "70",
            "search": "org-1",
            "sort": "GPQA",
            "order": "asc",
        },
        "page 2": {"page": "2"},
        "page 100": {"page": str(min(100, pages))},
        "last page": {"page": str(pages)},
        "MUSR asc, page 50": {"sort": "MUSR", "order": "asc", "page": str(min(50, pages))},
    }


def _varied(scores: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {k: (v * rng.uniform(0.5, 1.5) if isinstance(v, float) else v) for k, v in scores.items()}


def _request(request_id: int, model: str, status: Status, now: datetime, **values: Any) -> dict[str, Any]:
    namespace = model.split("/", 1)[0]
    return {
        "id": request_id, "model": model, "namespace": namespace, "revision": "main",
        "sha": f"{request_id:040x}", "precision": Precision.BFLOAT16.value, "weight_type": "Original",
        "model_type": ModelType.FINE_TUNED.value, "base_model": None, "use_chat_template": False,
        "params_b": 7.2, "architectures": ["LlamaForCausalLM"], "license": "apache-2.0",
        "sender": f"user-{request_id}", "status": status.value, "votes": 1, "attempts": 0,
        "submitted_at": now, "updated_at": now, "started_at": None, "worker_id": None, "heartbeat_at": None,
        "failure_reason": None, **values,
    }  # fmt: skip


def _evaluated(
    n: int, results: dict[str, Any], config: LeaderboardConfig, now: datetime, rng: random.Random
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(request row, evaluation row) of ``n`` finished requests of varied types, precisions and sizes."""
    scores, stderrs, digest = (
        normalize(results, config),
        standard_errors(results, config),
        config_hash(config),
    )
    types, precisions = list(ModelType), list(Precision)
    for i in range(1, n + 1):
        model = f"org-{i % 313}/model-{i}"
        model_type = types[i % len(types)]
        at = now - timedelta(minutes=n - i)
        request = _request(
            i, model, Status.FINISHED, at, precision=precisions[i % len(precisions)].value,
            model_type=model_type.value, params_b=PARAMS_B[i % len(PARAMS_B)],
            base_model="org-0/base" if model_type is ModelType.MERGE else None, use_chat_template=i % 2 == 0,
            attempts=1, started_at=at,
        )  # fmt: skip
        evaluation = {
            "id": i, "request_id": i, "leaderboard": config.name, "config_hash": digest,
            "scores": _varied(scores, rng), "stderrs": stderrs, "results": results,
            "provenance": provenance(model, config, digest), "artifacts": f"/runs/request-{i}", "attempt": 1,
            "worker_id": "worker-1", "started_at": at, "finished_at": at, "duration_seconds": 3600.0,
            "version": 1, "recorded_at": at,
        }  # fmt: skip
        yield request, evaluation


def _queue(
    first: int, sizes: dict[str, int], now: datetime, rng: random.Random
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(request row, its vote rows): pending requests with a long tail of votes (the signed-in user's on
    about one in five of the most voted), then running and failed ones."""
    pending = sizes["pending"]
    for index in range(pending):
        request_id = first + index
        at = now - timedelta(seconds=pending - index)
        extra = int(rng.paretovariate(1.2)) - 1 if index % 4 == 0 else 0
        voters = [f"user-{request_id}"] + [f"voter-{v}" for v in range(min(extra, 200))]
        if extra and index % 5 == 0:
            voters.append(USER)
        row = _request(
            request_id, f"queue-{request_id % 997}/model-{request_id}", Status.PENDING, at, votes=len(voters)
        )
        yield row, [{"request_id": request_id, "voter": v, "created_at": at} for v in voters]
    request_id = first + pending
    for status, count in ((Status.RUNNING, sizes["running"]), (Status.FAILED, sizes["failed"])):
        for index in range(count):
            at = now - timedelta(seconds=count - index)
            values: dict[str, Any] = {"attempts": 1, "started_at": at}
            if status is Status.RUNNING:
                values |= {"worker_id": f"local:{index}", "heartbeat_at": now}
            else:
                values |= {"failure_reason": "CUDA out of memory (gave up after 3 attempts)"}
            row = _request(request_id, f"other-{request_id % 97}/model-{request_id}", status, at, **values)
            yield row, [{"request_id": request_id, "voter": row["sender"], "created_at": at}]
            request_id += 1


def _insert(app: App, rows: Iterator[tuple[Any, Any]], tables: tuple[Any, Any], batch: int) -> None:
    """Insert (row of the first table, row or rows of the second) pairs, ``batch`` pairs a transaction."""
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for one, other in itertools.chain(rows, [(None, None)]):
        if one is not None:
            first.append(one)
            second += other if isinstance(other, list) else [other]
        if first and (one is None or len(first) == batch):
            with app.db.transaction() as conn:
                for table, values in zip(tables, (first, second), strict=True):
                    if values:
                        conn.execution_options(insertmanyvalues_page_size=1_000).execute(
                            insert(table), values
                        )
            first, second = [], []


def bulk_load(app: App, sizes: dict[str, int], config: LeaderboardConfig) -> float:
    """Fill the database (see the module's docstring); seconds taken."""
    started = time.perf_counter()
    rng = random.Random(0)
    now = datetime.now(UTC) - timedelta(days=1)
    results = json.loads(RESULTS_FIXTURE.read_text())
    # The harness output makes evaluation rows large (about 100 kB each): fewer of them a transaction.
    _insert(app, _evaluated(sizes["models"], results, config, now, rng), (requests, evaluations), BATCH // 5)
    _insert(app, _queue(sizes["models"] + 1, sizes, now, rng), (requests, votes), BATCH)
    if app.db.is_postgres:
        with app.db.transaction() as conn:
            for table in ("requests", "evaluations", "votes"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                    )
                )
    with app.db.engine.connect() as conn:  # fresh statistics, as autovacuum would leave them
        conn.execute(text("ANALYZE"))
        conn.commit()
    return time.perf_counter() - started


def _get(client: TestClient, path: str, params: dict[str, str] | None = None) -> tuple[float, bytes]:
    """One page, timed from the request to its whole body; (seconds, body)."""
    started = time.perf_counter()
    response = client.get(path, params=params)
    body = response.content
    seconds = time.perf_counter() - started
    assert response.status_code == 200, (path, params, response.status_code, response.text[:500])
    return seconds, body


def _sign_in(client: TestClient, app: App) -> None:
    """Sign the client in as USER with an API token (as `leaderboard admin token create` issues it)."""
    _, token = TokenRepository(app.db).create(USER, False, "bench", app.clock())
    form = client.get("/signin").text
    found = re.search(r'name="csrf" value="([^"]+)"', form)
    assert found is not None
    signed = client.post("/signin", data={"csrf": found.group(1), "token": token}, follow_redirects=False)
    assert signed.status_code == 303, signed.text[:500]


def _timed_views(
    client: TestClient, views: dict[str, dict[str, str]], repeats: int
) -> dict[str, list[float]]:
    """Every view ``repeats`` times, interleaved (one of each, then again), after one untimed round."""
    for params in views.values():
        _get(client, "/", params)
    seconds: dict[str, list[float]] = {name: [] for name in views}
    for _ in range(repeats):
        for name, params in views.items():
            seconds[name].append(_get(client, "/", params)[0])
    return seconds


def _summary(seconds: list[float]) -> dict[str, float]:
    return {k: v for k, v in latency_ms(seconds).items() if k in ("n", "p50_ms", "p95_ms", "max_ms")}


def _new_result(app: App, number: int, results: dict[str, Any], config: LeaderboardConfig) -> str:
    """A model submitted, run and stored as the worker stores its result (the queue's top request is some
    other one, so this one is moved to RUNNING by id); its id."""
    new = NewRequest(
        model=f"org-new/model-{number}", revision="main", sha=f"{number:040x}", precision=Precision.BFLOAT16,
        weight_type=WeightType.ORIGINAL, model_type=ModelType.CHAT, base_model=None, use_chat_template=True,
        params_b=7.2, architectures=("LlamaForCausalLM",), license="apache-2.0", sender="alice",
    )  # fmt: skip
    now = app.clock()
    request = app.requests.create(new, now, None)
    app.requests.transition(
        request.id, Status.RUNNING, actor="worker-1", reason="claimed", now=now,
        values={"worker_id": "worker-1", "heartbeat_at": now, "started_at": now, "attempts": 1},
    )  # fmt: skip
    digest = config_hash(config)
    evaluation = Evaluation(
        request_id=request.id, leaderboard=config.name, config_hash=digest, scores=normalize(results, config),
        stderrs=standard_errors(results, config), results=results,
        provenance=provenance(request.model, config, digest), artifacts="/runs/new", attempt=1,
        worker_id="worker-1", started_at=now, finished_at=now, duration_seconds=3600.0,
    )  # fmt: skip
    app.evaluations.store_and_finish(evaluation, now)
    return request.model


def _rebuilds(app: App, client: TestClient, config: LeaderboardConfig, rounds: int) -> dict[str, Any]:
    """The first page right after a change it shows: a new result (stored as the worker stores it), a
    flag; each checked on the page it is timed on."""
    results = json.loads(RESULTS_FIXTURE.read_text())
    after_result, after_flag = [], []
    for number in range(rounds):
        model = _new_result(app, number, results, config)
        seconds, body = _get(client, "/", {"search": model})
        assert model in body.decode(), "the new result is not on the next page"
        after_result.append(seconds)
        flagged = f"org-{(number + 1) % 313}/model-{number + 1}"
        app.moderation.flags.add(flagged, "bench", app.clock(), "bench")
        seconds, body = _get(client, "/", {"search": flagged})
        assert 'class="flag"' in body.decode(), "the flag is not on the next page"
        after_flag.append(seconds)
    return {"after_a_new_result": _summary(after_result), "after_a_flag": _summary(after_flag)}


def run_on(kind: str, size: str, root: Path) -> dict[str, Any]:
    sizes = SIZES[size]
    config = load_config()
    with fresh_database(kind, root / kind) as url:
        app = App.open(Settings(database_url=url))
        try:
            load = bulk_load(app, sizes, config)
            with TestClient(create_api(app)) as client:
                first_seconds, first = _get(client, "/")
                assert f"{sizes['models']} models" in first.decode()
                pages = -(-sizes["models"] // 50)
                views = leaderboard_views(pages)
                board = _timed_views(client, views, sizes["repeats"])
                queue_anonymous = [_get(client, "/queue")[0] for _ in range(sizes["repeats"] * 3)]
                _sign_in(client, app)
                signed_page = _get(client, "/queue")[1].decode()
                withdraw = signed_page.count("Withdraw my vote")
                assert withdraw > 0 and signed_page.count(">Vote</button>") + withdraw == 50
                queue_signed = [_get(client, "/queue")[0] for _ in range(sizes["repeats"] * 3)]
                rebuilds = _rebuilds(app, client, config, sizes["rebuilds"])
        finally:
            app.close()
    per_view = {name: _summary(seconds) for name, seconds in board.items()}
    worst = max(per_view, key=lambda name: per_view[name]["p95_ms"])
    every = [s for seconds in board.values() for s in seconds]
    queue = {"anonymous": _summary(queue_anonymous), "signed_in": _summary(queue_signed)}
    return {
        "models": sizes["models"],
        "pending_requests": sizes["pending"],
        "running_requests": sizes["running"],
        "failed_requests": sizes["failed"],
        "load_seconds": load,
        "first_page_after_start_seconds": first_seconds,
        "first_page_bytes": len(first),
        "first_page_gzip_bytes": len(gzip.compress(first)),
        "leaderboard": per_view,
        "leaderboard_all_views": _summary(every),
        "slowest_view": worst,
        "queue": queue,
        "queue_withdraw_buttons": withdraw,
        **rebuilds,
        "target_page_p95_ms": target(per_view[worst]["p95_ms"], TARGET_PAGE_P95_MS),
        "target_first_page_bytes": target(float(len(first)), TARGET_FIRST_PAGE_BYTES),
        "target_queue_p95_ms": target(
            max(queue["anonymous"]["p95_ms"], queue["signed_in"]["p95_ms"]), TARGET_QUEUE_P95_MS
        ),
    }


def run(size: str, root: Path) -> dict[str, Any]:
    return {kind: run_on(kind, size, root) for kind in ("sqlite", "postgres")}
