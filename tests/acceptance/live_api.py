"""A live `leaderboard serve` for tests: the real CLI in a subprocess on a free port, its log kept; and a
small local Hub answering whoami, for Hugging Face tokens."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.commands import clean_env, leaderboard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> str:
    """`leaderboard ARGS`, which must succeed; its standard output."""
    done = leaderboard(env, *args, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Server:
    def __init__(self, url: str, log: Path, process: subprocess.Popen[bytes], env: dict[str, str]) -> None:
        self.url, self.log, self.process, self.env = url, log, process, env

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    return clean_env(LEADERBOARD_DATABASE_URL=database_url, **extra)


@contextmanager
def live_server(env: dict[str, str], log: Path, *options: str) -> Iterator[Server]:
    """`leaderboard serve` (the API alone unless ``options`` say otherwise) until the block ends."""
    port = free_port()
    command = ["serve", "--port", str(port), *(options or ("--no-scheduler",))]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, log, process, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited: {server.log_text()}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not start: {server.log_text()}"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class FakeHub:
    """whoami-v2 for the tokens it knows ({token: user}); 401 for others; 503 while `down`."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.down = False
        self.calls = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.calls += 1
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                if self.path != "/api/whoami-v2":
                    self._send(404, {"error": "not found"})
                elif hub.down:
                    self._send(503, {"error": "down"})
                elif token in hub.users:
                    self._send(200, {"type": "user", "name": hub.users[token]})
                else:
                    self._send(401, {"error": "Invalid credentials in Authorization header"})

            def _send(self, status: int, body: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
