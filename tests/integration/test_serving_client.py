"""The chat endpoint client against live servers: ours over real tiny models, and real servers that fail
on purpose (503s, 429 with Retry-After, hanging, refusing, answering nonsense). And the `openai` package
against our endpoint, the strongest check that it is OpenAI-compatible."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import openai
import pytest
from starlette.types import Receive, Scope, Send

from backend.errors import ChatEndpointRefused, ChatEndpointUnavailable
from backend.hub.local_store import LocalModelStore
from backend.retry import Backoff
from backend.serving.app import create_serving_app
from backend.serving.client import ChatCall, ChatClient, ChatMessage
from backend.serving.models import Catalog, ModelPool
from tests import serving
from tests.serving import CHAT, Flaky, Reference, free_port, live, reference

pytestmark = pytest.mark.slow
# The shared fixtures, under the names the tests ask for: a store of real tiny models and a pool over it.
store, pool = serving.store, serving.pool
MAX_TOKENS = 16
FAST = Backoff(attempts=3, base_s=0.01, max_s=0.5)
KEY = "sk-test-" + "x" * 16
MESSAGES = tuple(ChatMessage(m["role"], m["content"]) for m in CHAT)


@pytest.fixture(scope="module")
def expected(store: LocalModelStore) -> Reference:
    return reference(store, "good/tiny", CHAT, MAX_TOKENS)


@pytest.fixture(scope="module")
def url(store: LocalModelStore, pool: ModelPool) -> Iterator[str]:
    with live(create_serving_app(Catalog(store), pool)) as base:
        yield base


class Waits(list[float]):
    """The client's sleeps: recorded, and really slept."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def test_a_greedy_chat_with_logprobs(url, expected):
    with ChatClient(f"{url}/v1", backoff=FAST) as client:
        assert "good/tiny" in client.models()
        result = client.chat("good/tiny", MESSAGES, max_tokens=MAX_TOKENS, logprobs=True, top_logprobs=3)
    assert result.text == expected.text and result.model == "good/tiny"
    assert result.finish_reason in ("stop", "length") and result.attempts == 1 and result.seconds > 0
    assert result.usage is not None and result.usage.prompt_tokens == len(expected.prompt)
    assert result.usage.total_tokens == len(expected.prompt) + result.usage.completion_tokens
    assert [t.logprob for t in result.tokens] == pytest.approx(expected.logprobs, abs=1e-4)
    assert all(len(t.top) == 3 and t.top[0].token == t.token for t in result.tokens)
    assert all(t.bytes is not None and t.bytes.decode("utf-8", "replace") == t.token for t in result.tokens)


def test_many_calls_at_bounded_concurrency_come_back_in_order(url, expected):
    calls = [
        ChatCall("good/tiny", MESSAGES, max_tokens=MAX_TOKENS),
        ChatCall("good/other", MESSAGES, max_tokens=4),
        ChatCall("good/tiny", (ChatMessage("user", "Water boils at"),), max_tokens=4, stop=("e",)),
        ChatCall("good/tiny", MESSAGES, max_tokens=8, temperature=0.8, seed=11),
    ] * 2
    with ChatClient(f"{url}/v1", max_concurrency=3, backoff=FAST) as client:
        results = client.complete_many(calls)
        alone = [client.complete(call) for call in calls[:4]]
    assert [r.text for r in results] == [r.text for r in alone] * 2
    assert results[0].text == expected.text
    assert results[1].model == "good/other" and "e" not in results[2].text
    assert results[3].usage is not None and results[3].usage.completion_tokens <= 8


def test_503s_are_tried_again_with_backoff_until_the_answer(store, pool, expected):
    flaky = Flaky(create_serving_app(Catalog(store), pool), failures=2)
    waits = Waits()
    with live(flaky) as base, ChatClient(f"{base}/v1", backoff=FAST, sleep=waits) as client:
        result = client.chat("good/tiny", MESSAGES, max_tokens=MAX_TOKENS)
    assert result.text == expected.text and result.attempts == 3 and flaky.requests == 3
    assert waits == [0.01, 0.02]
    assert result.seconds >= 0.03


def test_a_429_waits_as_long_as_retry_after_says(store, pool):
    flaky = Flaky(create_serving_app(Catalog(store), pool), failures=1, status=429, retry_after="0.3")
    waits = Waits()
    with live(flaky) as base, ChatClient(f"{base}/v1", backoff=FAST, sleep=waits) as client:
        assert client.chat("good/tiny", MESSAGES, max_tokens=2).attempts == 2
    assert waits == [0.3]


def test_the_client_gives_up_after_its_attempts_with_a_clear_error():
    always = Flaky(None, failures=None)
    waits = Waits()
    with (
        live(always) as base,
        ChatClient(f"{base}/v1", backoff=FAST, sleep=waits) as client,
        pytest.raises(ChatEndpointUnavailable) as caught,
    ):
        client.chat("good/tiny", MESSAGES)
    assert always.requests == 3 and waits == [0.01, 0.02]
    message = caught.value.message
    assert "after 3 attempts" in message and "HTTP 503: overloaded, try later" in message
    assert f"{base}/v1/chat/completions" in message and caught.value.http_status == 503


def test_an_endpoint_that_is_not_there_is_unavailable():
    with (
        ChatClient(f"http://127.0.0.1:{free_port()}/v1", backoff=FAST, sleep=Waits()) as client,
        pytest.raises(ChatEndpointUnavailable, match="ConnectError"),
    ):
        client.models()


async def _hanging(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await asyncio.sleep(1.0)


def test_a_call_past_its_timeout_is_tried_again_then_unavailable():
    with (
        live(_hanging) as base,
        ChatClient(f"{base}/v1", timeout_s=0.2, backoff=FAST, sleep=Waits()) as client,
    ):
        started = time.monotonic()
        with pytest.raises(ChatEndpointUnavailable, match="ReadTimeout"):
            client.chat("good/tiny", MESSAGES)
    assert time.monotonic() - started < 3


def test_a_refusal_is_not_tried_again_and_says_why(store, pool):
    counting = Flaky(create_serving_app(Catalog(store), pool, api_key=KEY), failures=0)
    with live(counting) as base:
        with ChatClient(f"{base}/v1", backoff=FAST) as client, pytest.raises(ChatEndpointRefused) as caught:
            client.chat("good/tiny", MESSAGES)
        assert (caught.value.status, caught.value.reason) == (401, "invalid_api_key")
        assert counting.requests == 1
        with ChatClient(f"{base}/v1", api_key=KEY, backoff=FAST) as client:
            with pytest.raises(ChatEndpointRefused) as caught:
                client.chat("nobody/nothing", MESSAGES)
            assert (caught.value.status, caught.value.reason) == (404, "model_not_found")
            assert "GET /v1/models" in caught.value.message
            assert client.chat("good/tiny", MESSAGES, max_tokens=2).usage is not None
    assert counting.requests == 3


async def _nonsense(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"choices": "none"}).encode() if scope["path"].endswith("completions") else b"<html>"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def test_an_answer_that_is_not_a_chat_completion_is_refused():
    with live(_nonsense) as base, ChatClient(f"{base}/v1", backoff=FAST) as client:
        with pytest.raises(ChatEndpointRefused, match="not a chat completion"):
            client.chat("good/tiny", MESSAGES)
        with pytest.raises(ChatEndpointRefused, match="not JSON"):
            client.models()


def test_the_openai_package_talks_to_our_endpoint(store, pool, expected):
    with live(create_serving_app(Catalog(store), pool, api_key=KEY)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)
        assert "good/tiny" in [m.id for m in client.models.list()]
        completion = client.chat.completions.create(
            model="good/tiny",
            messages=CHAT,
            max_tokens=MAX_TOKENS,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        choice = completion.choices[0]
        assert choice.message.content == expected.text and choice.message.role == "assistant"
        assert [t.logprob for t in choice.logprobs.content] == pytest.approx(expected.logprobs, abs=1e-4)
        assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
        assert completion.usage.prompt_tokens == len(expected.prompt)
        stream = client.chat.completions.create(
            model="good/tiny",
            messages=CHAT,
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
        assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="nobody/nothing", messages=CHAT)
        assert caught.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="good/tiny", messages=CHAT, n=2)
        assert bad.value.param == "n"
        wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
