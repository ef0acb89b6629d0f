"""The OpenAI-compatible model endpoint over real tiny models in a local model store: its answers checked
against transformers' own (computed in the tests), its errors in OpenAI's shape."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from backend.hub.local_store import LocalModelStore
from backend.serving.app import create_serving_app
from backend.serving.models import Catalog, ModelPool
from backend.serving.protocol import Limits
from tests import serving
from tests.serving import CHAT, Reference, live, reference

pytestmark = pytest.mark.slow
# The shared fixtures, under the names the tests ask for: a store of real tiny models and a pool over it.
store, pool = serving.store, serving.pool
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def client(store: LocalModelStore, pool: ModelPool) -> Iterator[TestClient]:
    app = create_serving_app(
        Catalog(store), pool, Limits(max_messages=8, max_prompt_chars=2000, max_tokens=64)
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def expected(store: LocalModelStore) -> Reference:
    return reference(store, "good/tiny", CHAT, MAX_TOKENS)


def chat(client: TestClient, **body: Any) -> Any:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "good/tiny", "messages": CHAT, "max_tokens": MAX_TOKENS, "temperature": 0, **body},
    )
    assert response.status_code == 200, response.text
    return response.json()


def error(response: httpx.Response, status: int, code: str, param: str | None = None) -> str:
    """The response is an error in OpenAI's shape with this status, code and param; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["param"] == param
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


def events(text: str) -> list[Any]:
    """The data of each server-sent event, JSON-decoded ([DONE] as is)."""
    assert text.endswith("data: [DONE]\n\n")
    found = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: ")
            data = block.removeprefix("data: ")
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def test_models_lists_the_store(client, store):
    answer = client.get("/v1/models").json()
    assert answer["object"] == "list"
    assert [m["id"] for m in answer["data"]] == store.repositories()
    assert all(m["object"] == "model" and m["owned_by"] == m["id"].split("/")[0] for m in answer["data"])
    assert client.get("/v1/models/good/tiny").json()["id"] == "good/tiny"
    error(client.get("/v1/models/nobody/nothing"), 404, "model_not_found", "model")


def test_a_greedy_completion_is_transformers_greedy_generate(client, expected):
    answer = chat(client)
    assert answer["object"] == "chat.completion" and answer["model"] == "good/tiny"
    choice = answer["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected.text}
    assert choice["finish_reason"] == ("length" if len(expected.tokens) == MAX_TOKENS else "stop")
    assert choice["logprobs"] is None
    assert answer["usage"] == {
        "prompt_tokens": len(expected.prompt),
        "completion_tokens": MAX_TOKENS,
        "total_tokens": len(expected.prompt) + MAX_TOKENS,
    }
    again = chat(client)
    assert again["choices"] == answer["choices"] and again["id"] != answer["id"]


def test_logprobs_are_the_models_log_softmax(client, expected):
    content = chat(client, logprobs=True, top_logprobs=5)["choices"][0]["logprobs"]["content"]
    assert len(content) == len(expected.tokens)
    decode = expected.tokenizer.decode
    for entry, token, logprob, top in zip(
        content, expected.tokens, expected.logprobs, expected.top, strict=True
    ):
        assert entry["logprob"] == pytest.approx(logprob, abs=1e-4)
        assert bytes(entry["bytes"]).decode("utf-8", errors="replace") == entry["token"]
        if "\ufffd" not in entry["token"]:
            assert entry["token"] == decode([token])
        alternatives = entry["top_logprobs"]
        assert [a["logprob"] for a in alternatives] == sorted(
            (a["logprob"] for a in alternatives), reverse=True
        )
        assert [a["logprob"] for a in alternatives] == pytest.approx([v for _, v in top], abs=1e-4)
        assert alternatives[0]["token"] == entry["token"]  # greedy: the chosen token is the likeliest
        assert all(a["logprob"] <= 0 for a in alternatives)
        assert math.fsum(math.exp(a["logprob"]) for a in alternatives) <= 1 + 1e-6
    # The tokens' bytes are the text's bytes, but for special tokens (the text leaves them out).
    special = set(expected.tokenizer.all_special_tokens)
    text_bytes = b"".join(bytes(e["bytes"]) for e in content if e["token"] not in special)
    assert text_bytes.decode("utf-8", errors="replace") == expected.text
    same = chat(client, logprobs=True, top_logprobs=5)["choices"][0]["logprobs"]["content"]
    assert same == content
    only = chat(client, logprobs=True)["choices"][0]["logprobs"]["content"]
    assert [e["top_logprobs"] for e in only] == [[]] * len(content)
    assert [e["logprob"] for e in only] == [e["logprob"] for e in content]


def _stop_in(text: str) -> tuple[str, int]:
    """A stop sequence of the text's middle that does not occur earlier, and where it begins."""
    for start in range(len(text) // 3, len(text) - 3):
        stop = text[start : start + 3]
        if "\ufffd" not in stop and text.find(stop) == start:
            return stop, start
    raise AssertionError(f"no stop sequence found in {text!r}")


def test_a_stop_sequence_cuts_the_text(client, expected):
    stop, start = _stop_in(expected.text)
    answer = chat(client, stop=[stop, "never in the text \x00"], logprobs=True)
    choice = answer["choices"][0]
    assert choice["message"]["content"] == expected.text[:start]
    assert choice["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] < MAX_TOKENS
    assert chat(client, stop=stop)["choices"][0]["message"]["content"] == expected.text[:start]
    tokens = choice["logprobs"]["content"]
    text_of_tokens = b"".join(bytes(e["bytes"]) for e in tokens).decode("utf-8", errors="replace")
    assert text_of_tokens.startswith(expected.text[:start])  # the tokens that made the text, and no more
    assert len(text_of_tokens) < len(expected.text[:start]) + len(tokens[-1]["token"]) + 1


@pytest.mark.parametrize("options", [{}, {"logprobs": True, "top_logprobs": 2}, {"stop": "stop"}])
def test_streamed_chunks_add_up_to_the_completion(client, expected, options):
    if "stop" in options:
        options = {"stop": _stop_in(expected.text)[0]}
    whole = chat(client, **options)
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "good/tiny",
            "messages": CHAT,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **options,
        },
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    data = events(response.text)
    assert data[-1] == "[DONE]"
    chunks, usage = data[:-2], data[-2]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert len(chunks) > 3  # it came in pieces
    if options.get("logprobs"):
        streamed = [e for c in chunks[1:-1] for e in c["choices"][0]["logprobs"]["content"]]
        assert streamed == whole["choices"][0]["logprobs"]["content"]


def test_sampling_with_a_seed_repeats_and_follows_the_seed(client, expected):
    def sample(seed: int) -> str:
        body = {"temperature": 1.0, "top_p": 0.9, "seed": seed}
        return str(chat(client, **body)["choices"][0]["message"]["content"])

    first = sample(1)
    assert sample(1) == first
    assert len({first, sample(2), sample(3)}) > 1
    assert first != expected.text or sample(2) != expected.text


def test_a_revision_can_be_pinned(client, store, expected):
    sha = store.resolve("good/tiny", "main").sha
    answer = chat(client, model=f"good/tiny@{sha}")
    assert answer["model"] == f"good/tiny@{sha}" and answer["system_fingerprint"] == f"good/tiny@{sha}"
    assert answer["choices"][0]["message"]["content"] == expected.text
    response = client.post("/v1/chat/completions", json={"model": f"good/tiny@{'0' * 40}", "messages": CHAT})
    error(response, 404, "revision_not_found", "model")


def _post(client: TestClient, body: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json=body)


def test_errors_have_openais_shape(client):
    message = [{"role": "user", "content": "hello"}]
    assert "GET /v1/models" in error(
        _post(client, {"model": "nobody/nothing", "messages": message}), 404, "model_not_found", "model"
    )
    assert "not ORG/NAME" in error(
        _post(client, {"model": "not a repo", "messages": message}), 404, "model_not_found", "model"
    )
    assert "chat template" in error(
        _post(client, {"model": "good/no-template", "messages": message}), 400, "no_chat_template", "model"
    )
    assert "safetensors" in error(
        _post(client, {"model": "bad/no-safetensors", "messages": message}),
        400,
        "model_not_servable",
        "model",
    )
    remote = error(
        _post(client, {"model": "bad/remote-code", "messages": message}), 400, "model_not_servable", "model"
    )
    assert "trust_remote_code=False" in remote and "/" + "tmp" not in remote  # no folder of the server
    for adapter, says in (("bad/adapter", "no config.json"), ("bad/adapter-with-config", "merge it")):
        refusal = error(
            _post(client, {"model": adapter, "messages": message}), 400, "model_not_servable", "model"
        )
        assert says in refusal
    assert "64" in error(
        _post(client, {"model": "good/tiny", "messages": message, "max_tokens": 65}),
        400,
        "invalid_value",
        "max_tokens",
    )
    error(
        _post(client, {"model": "good/tiny", "messages": message, "max_completion_tokens": 1000}),
        400,
        "invalid_value",
        "max_completion_tokens",
    )
    assert "n=1" in error(
        _post(client, {"model": "good/tiny", "messages": message, "n": 2}), 400, "invalid_value", "n"
    )
    error(
        _post(client, {"model": "good/tiny", "messages": [{"role": "robot", "content": "hi"}]}),
        400,
        "invalid_value",
        "messages.0.role",
    )
    error(
        _post(client, {"model": "good/tiny", "messages": [{"role": "user", "content": ["hi"]}]}),
        400,
        "invalid_value",
        "messages.0.content",
    )
    error(_post(client, {"model": "good/tiny", "messages": []}), 400, "invalid_value", "messages")
    error(_post(client, {"messages": message}), 400, "invalid_value", "model")
    error(
        _post(client, {"model": "good/tiny", "messages": message, "temperature": 3}),
        400,
        "invalid_value",
        "temperature",
    )
    error(
        _post(client, {"model": "good/tiny", "messages": message, "top_logprobs": 21, "logprobs": True}),
        400,
        "invalid_value",
        "top_logprobs",
    )
    error(
        _post(client, {"model": "good/tiny", "messages": message, "top_logprobs": 2}),
        400,
        "invalid_value",
        "top_logprobs",
    )
    error(
        _post(client, {"model": "good/tiny", "messages": message, "stop": ["a", "b", "c", "d", "e"]}),
        400,
        "invalid_value",
        "stop",
    )
    error(
        _post(client, {"model": "good/tiny", "messages": message, "tools": [{"type": "function"}]}),
        400,
        "invalid_value",
        "tools",
    )
    error(_post(client, {"model": "good/tiny", "messages": message * 9}), 400, "invalid_value", "messages")
    error(
        _post(client, {"model": "good/tiny", "messages": [{"role": "user", "content": "x" * 2001}]}),
        400,
        "invalid_value",
        "messages",
    )
    error(_post(client, [1, 2]), 400, "invalid_json")
    error(client.post("/v1/chat/completions", content=b'{"model": '), 400, "invalid_json")
    error(client.post("/v1/chat/completions", content=b"\xff\xfe"), 400, "invalid_json")
    error(client.post("/v1/chat/completions", content=b"[" * 50_000), 400, "invalid_json")
    error(client.post("/v1/chat/completions", content=b" " * 100_000), 400, "request_too_large")
    error(client.get("/v1/nothing"), 404, "not_found")
    error(client.delete("/v1/models"), 405, "method_not_allowed")
    error(client.get("/v1/chat/completions"), 405, "method_not_allowed")
    # Unknown fields are ignored, as OpenAI-compatible servers do.
    assert chat(client, user="someone", metadata={"a": 1}, max_tokens=2)["usage"]["completion_tokens"] == 2


def test_a_prompt_past_the_models_context_is_refused(store):
    pool = ModelPool(store, max_loaded=1, device="cpu")
    app = create_serving_app(
        Catalog(store, ["good/tiny"]), pool, Limits(max_tokens=8192, max_prompt_chars=200_000)
    )
    with TestClient(app) as client:
        long = [{"role": "user", "content": "the quick brown fox " * 1200}]
        message = error(
            _post(client, {"model": "good/tiny", "messages": long}),
            400,
            "context_length_exceeded",
            "messages",
        )
        assert "4096" in message
        short = [{"role": "user", "content": "hi"}]
        error(
            _post(client, {"model": "good/tiny", "messages": short, "max_tokens": 5000}),
            400,
            "context_length_exceeded",
            "messages",
        )


def test_named_models_only_and_a_small_lru(store):
    pool = ModelPool(store, max_loaded=1, device="cpu")
    app = create_serving_app(Catalog(store, ["good/tiny", "good/other"]), pool)
    with TestClient(app) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["good/tiny", "good/other"]
        error(_post(client, {"model": "good/no-template", "messages": CHAT}), 404, "model_not_found", "model")
        for model in ("good/tiny", "good/other"):
            assert _post(client, {"model": model, "messages": CHAT, "max_tokens": 2}).status_code == 200
            assert [repo for repo, _ in pool.loaded()] == [model]


def test_a_key_is_needed_when_one_is_set(store, pool, expected):
    app = create_serving_app(Catalog(store), pool, api_key="sk-" + "k" * 20)
    with TestClient(app) as client:
        body = {"model": "good/tiny", "messages": CHAT, "max_tokens": MAX_TOKENS, "temperature": 0}
        error(client.get("/v1/models"), 401, "invalid_api_key")
        error(client.post("/v1/chat/completions", json=body), 401, "invalid_api_key")
        error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
        error(client.get("/v1/models", headers={"Authorization": "sk-" + "k" * 20}), 401, "invalid_api_key")
        headers = {"Authorization": "Bearer sk-" + "k" * 20}
        assert client.get("/v1/models", headers=headers).status_code == 200
        answer = client.post("/v1/chat/completions", json=body, headers=headers).json()
        assert answer["choices"][0]["message"]["content"] == expected.text
        assert client.get("/health").status_code == 200  # for readiness probes


def test_concurrent_requests_on_a_live_server_get_the_same_answers(store, pool, expected):
    app = create_serving_app(Catalog(store), pool)
    body = {
        "model": "good/tiny",
        "messages": CHAT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "logprobs": True,
    }
    answers: list[Any] = []
    with live(app) as url:

        def ask() -> None:
            answers.append(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json())

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(answers) == 6
    assert all(a["choices"] == answers[0]["choices"] for a in answers)
    assert answers[0]["choices"][0]["message"]["content"] == expected.text


def test_a_full_server_says_come_back_and_a_stream_gives_its_place_back(store, pool):
    app = create_serving_app(Catalog(store), pool, max_pending=1)
    body = {"model": "good/tiny", "messages": CHAT, "max_tokens": 8, "temperature": 0}
    loaded = pool.get(Catalog(store).find("good/tiny"))
    answers: list[httpx.Response] = []
    with live(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        with loaded.lock:  # the model is busy: the first request waits for it, holding the only place
            waiting = threading.Thread(
                target=lambda: answers.append(http.post("/v1/chat/completions", json=body))
            )
            waiting.start()
            deadline = time.monotonic() + 30
            while http.get("/health").json()["in_progress"] == 0:  # the first request holds the place
                assert time.monotonic() < deadline and waiting.is_alive()
                time.sleep(0.01)
            busy = http.post("/v1/chat/completions", json=body)
            error(busy, 503, "server_busy")
            assert busy.headers["retry-after"] == "1"
        waiting.join()
        assert answers[0].status_code == 200
        with http.stream(
            "POST", "/v1/chat/completions", json={**body, "max_tokens": 64, "stream": True}
        ) as stream:
            assert next(stream.iter_lines()).startswith("data: ")  # and left before its end
        for _ in range(100):
            answer = http.post("/v1/chat/completions", json=body)
            if answer.status_code == 200:
                break
            time.sleep(0.05)
        assert answer.status_code == 200, answer.text  # its place was given back


def test_a_model_asked_for_at_once_loads_once(store):
    pool = ModelPool(store, max_loaded=2, device="cpu")
    served = Catalog(store).find("good/tiny")
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(pool.get(served))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(model is got[0] for model in got)
    assert pool.loaded() == [("good/tiny", store.resolve("good/tiny", "main").sha)]
