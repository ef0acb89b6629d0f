"""The real `leaderboard serve-models` as a subprocess, over a local model store, called by our client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backend.errors import ChatEndpointRefused
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.serving.client import ChatClient, ChatMessage
from tests.commands import clean_env, leaderboard
from tests.serving import free_port

pytestmark = pytest.mark.slow
KEY = "sk-accept-" + "y" * 16


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    store = LocalModelStore(tmp_path_factory.mktemp("serve-models"))
    build_tiny_model(store, "acme/tiny-chat")
    build_tiny_model(store, "acme/tiny-base", chat_template=False)
    return store


def test_serve_models_serves_the_configured_models_behind_its_key(store: LocalModelStore, tmp_path: Path):
    port = free_port()
    env = clean_env(
        LEADERBOARD_MODEL_STORE=str(store.root),
        LEADERBOARD_SERVE_PORT=str(port),
        LEADERBOARD_SERVE_MODELS="acme/tiny-chat",
        LEADERBOARD_SERVE_API_KEY=KEY,
        LEADERBOARD_SERVE_DEVICE="cpu",
    )
    log = tmp_path / "serve-models.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "serve-models"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with ChatClient(f"{url}/v1", api_key=KEY) as client:
            assert client.models() == ["acme/tiny-chat"]
            messages = [ChatMessage("user", "Please answer with a single letter: A, B, C or D.")]
            first = client.chat("acme/tiny-chat", messages, max_tokens=8, logprobs=True, top_logprobs=2)
            again = client.chat("acme/tiny-chat", messages, max_tokens=8, logprobs=True, top_logprobs=2)
        assert first.text and first.text == again.text and first.tokens == again.tokens
        assert first.usage is not None and first.usage.completion_tokens <= 8
        with ChatClient(f"{url}/v1") as keyless, pytest.raises(ChatEndpointRefused) as caught:
            keyless.models()
        assert caught.value.status == 401
        # Even a request uvicorn cannot parse is answered in OpenAI's error shape.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400")
        assert json.loads(body)["error"]["code"] == "invalid_http"
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert f"serving models on http://127.0.0.1:{port}/v1 with a key" in text and KEY not in text
    assert "chat completion" in text and "completion_tokens=" in text  # each completion is logged


def test_serve_models_refuses_to_start_without_a_store_or_with_an_unknown_model(store: LocalModelStore):
    done = leaderboard(clean_env(), "serve-models", timeout=120)
    assert done.returncode == 1 and "error [configuration]" in done.stderr
    assert "LEADERBOARD_MODEL_STORE" in done.stderr
    env = clean_env(LEADERBOARD_MODEL_STORE=str(store.root))
    done = leaderboard(env, "serve-models", "--models", "acme/tiny-chat,nobody/nothing", timeout=120)
    assert (
        done.returncode == 1 and "error [model_not_found]" in done.stderr and "nobody/nothing" in done.stderr
    )
    done = leaderboard(env, "serve-models", "--models", "acme/tiny-chat@no-such-branch", timeout=120)
    assert done.returncode == 1 and "error [revision_not_found]" in done.stderr
    help_text = leaderboard(env, "serve-models", "--help", timeout=120).stdout
    assert "--models ORG/NAME[@REVISION]" in help_text and "OpenAI-compatible" in help_text
