"""The edges of the HTTP API that only a live server shows: bodies sent chunked, a malformed Content-Length
read off a raw socket, an unexpected error as the server logs it, and Hub sign-in while the Hub is offline.
Every answer is in the one error shape."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.acceptance.live_api import Server, base_env, cli, live_server

pytestmark = pytest.mark.slow


def error_of(status: int, body: bytes, expected_status: int, code: str) -> dict[str, Any]:
    """The one error shape, with this status and code."""
    assert status == expected_status, body
    parsed = json.loads(body)
    assert set(parsed) == {"error"}, parsed
    error = parsed["error"]
    assert (error["status"], error["code"]) == (expected_status, code), error
    assert error["message"] and "Traceback" not in error["message"]
    return error


def raw_request(url: str, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, as bytes) over a plain socket: no client library can tidy
    it first. The status, headers and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    yield b'{"model": "acme/x", "model_type": "chat", "revision": "'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A live server (SQLite, a 2 kB body limit, huggingface_hub offline) and an API token's header."""
    root = tmp_path_factory.mktemp("api-edges")
    env = base_env(
        f"sqlite:///{root / 'leaderboard.db'}", LEADERBOARD_API_MAX_BODY_BYTES="2048", HF_HUB_OFFLINE="1"
    )
    token = cli(env, "admin", "token", "create", "alice").strip()
    with live_server(env, root / "server.log") as server:
        yield server, {"Authorization": f"Bearer {token}", "content-type": "application/json"}


def test_a_body_over_the_limit_sent_chunked_is_413(served: tuple[Server, dict[str, str]]) -> None:
    """Without a Content-Length the limit is found while reading, and answered 413 all the same."""
    server, auth = served
    with httpx.Client(base_url=server.url, timeout=60) as http:
        chunked = http.post("/api/submissions", content=chunks(50_000), headers=auth)
        assert "content-length" not in chunked.request.headers
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        error_of(chunked.status_code, chunked.content, 413, "payload_too_large")
        small = http.post("/api/submissions", content=chunks(1000), headers=auth)  # under the limit: read
        assert small.status_code != 413, small.text


def test_a_content_length_no_server_can_honour_is_a_json_400(served: tuple[Server, dict[str, str]]) -> None:
    server, _ = served
    for value in (b"-1", b"nope"):
        status, headers, body = raw_request(
            server.url,
            b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + value + b"\r\nConnection: close\r\n\r\n{}",
        )
        assert headers["content-type"].startswith("application/json"), (headers, body)
        error = error_of(status, body, 400, "bad_request")
        assert "Content-Length" in error["message"]


def test_offline_a_mistyped_token_is_401_not_an_unreachable_hub(
    served: tuple[Server, dict[str, str]],
) -> None:
    """HF_HUB_OFFLINE means Hub sign-in is off: a token that is not an API token is not valid (401), not
    blamed on a Hub that cannot be reached (503)."""
    server, auth = served
    with httpx.Client(base_url=server.url, timeout=60) as http:
        typo = http.post("/api/requests/1/vote", headers={"Authorization": "Bearer hf_mistypedtoken"})
        error = error_of(typo.status_code, typo.content, 401, "unauthorized")
        assert "API token" in error["message"] and "Hub sign-in is off" in error["message"]
        mistyped = http.post("/api/requests/1/vote", headers={"Authorization": auth["Authorization"] + "x"})
        error_of(mistyped.status_code, mistyped.content, 401, "unauthorized")
        assert http.get("/api/requests/1", headers=auth).status_code == 404  # the right token works


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_unexpected_error_is_a_500_in_the_one_shape_logged_once(database_url: str, tmp_path: Path) -> None:
    """A schema broken behind the server's back is an error the code cannot expect: the client gets the one
    shape without detail, and the server's log has its traceback once."""
    env = base_env(database_url)
    with live_server(env, tmp_path / "server.log") as server:
        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE requests DROP COLUMN license"))
        engine.dispose()
        answer = httpx.get(f"{server.url}/api/queue", timeout=60)
        error = error_of(answer.status_code, answer.content, 500, "internal_error")
        assert "license" not in error["message"]  # no detail for the client
        assert httpx.get(f"{server.url}/healthz", timeout=60).status_code == 200  # still serving
    log = server.log_text()
    # One log entry, with its (chained) traceback: ours, not a second one from the server.
    assert log.count("UndefinedColumn: column requests.license does not exist") == 1, log
    assert log.count("unexpected error") == 1 and "Exception in ASGI application" not in log, log
    assert "GET /api/queue 500" in log
