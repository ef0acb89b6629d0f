"""Streamed chat completions (ChatStream) from the real model endpoint over real tiny models: in this process
through InProcessTransport (the embedded default), and over TCP from a live server (what vLLM looks like in
production); and from real servers and apps that refuse, fail or misbehave on purpose."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.errors import ChatEndpointRefused, ChatEndpointUnavailable
from backend.hub.local_store import LocalModelStore
from backend.retry import Backoff
from backend.serving.app import create_serving_app
from backend.serving.client import ChatCall, ChatMessage
from backend.serving.inprocess import LOCAL_BASE_URL, InProcessTransport, local_endpoint
from backend.serving.models import Catalog, ModelPool
from backend.serving.protocol import Usage
from backend.serving.streaming import ChatStream
from backend.settings import Settings
from tests import serving
from tests.serving import CHAT, Flaky, Reference, free_port, live, reference

pytestmark = pytest.mark.slow
# The shared fixtures, under the names the tests ask for: a store of real tiny models and a pool over it.
store, pool = serving.store, serving.pool
MAX_TOKENS = 24
FAST = Backoff(attempts=3, base_s=0.01, max_s=0.5)
KEY = "sk-test-" + "x" * 16
CALL = ChatCall("good/tiny", tuple(ChatMessage(m["role"], m["content"]) for m in CHAT), max_tokens=MAX_TOKENS)
LONG = replace(CALL, max_tokens=64)


@pytest.fixture(scope="module")
def expected(store: LocalModelStore) -> Reference:
    return reference(store, "good/tiny", CHAT, MAX_TOKENS)


@pytest.fixture
def app(store: LocalModelStore, pool: ModelPool) -> ASGIApp:
    return create_serving_app(Catalog(store), pool)


def in_process(app: ASGIApp) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=InProcessTransport(app), timeout=60)


class Waits(list[float]):
    """ChatStream's sleeps, recorded (not slept)."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def read(stream: ChatStream) -> list[str]:
    return [text async for text in stream]


async def in_progress(http: httpx2.AsyncClient, base: str = "http://local-models") -> int:
    return int((await http.get(f"{base}/health")).json()["in_progress"])


async def until_idle(http: httpx2.AsyncClient, base: str = "http://local-models") -> None:
    """Wait (30 s at most) until the endpoint has no completion in progress."""
    deadline = time.monotonic() + 30
    while await in_progress(http, base):
        assert time.monotonic() < deadline, "a completion is still in progress"
        await asyncio.sleep(0.01)


def test_a_greedy_stream_in_process_is_the_completion_and_transformers_answer(app, expected):
    async def main() -> tuple[list[str], ChatStream, Any]:
        async with in_process(app) as http:
            async with ChatStream(http, LOCAL_BASE_URL, CALL) as stream:
                deltas = await read(stream)
            whole = await http.post(f"{LOCAL_BASE_URL}/chat/completions", json=CALL.body())
            return deltas, stream, whole.json()

    deltas, stream, whole = asyncio.run(main())
    choice = whole["choices"][0]
    assert "".join(deltas) == stream.text == choice["message"]["content"] == expected.text
    assert len(deltas) > 1 and all(deltas)
    assert stream.finish_reason == choice["finish_reason"]
    assert stream.finish_reason == ("length" if len(expected.tokens) == MAX_TOKENS else "stop")
    assert stream.usage == Usage(whole["usage"]["prompt_tokens"], whole["usage"]["completion_tokens"])
    assert stream.attempts == 1


def test_the_first_words_arrive_while_the_completion_is_in_progress(app, store, pool):
    """The transport streams: the first delta is read while the app still holds the completion's place
    (/health counts it until the app has sent its last byte). httpx2's own ASGITransport, which holds the
    body back until the app has finished, reads it only once that place is given back."""

    async def first_then_rest(http: httpx2.AsyncClient) -> tuple[int, list[str], int]:
        async with ChatStream(http, LOCAL_BASE_URL, LONG) as stream:
            first = await anext(stream)
            during = await in_progress(http)
            rest = await read(stream)
        assert first and rest
        return during, rest, await in_progress(http)

    async def main() -> tuple[Any, Any]:
        async with in_process(app) as http:
            ours = await first_then_rest(http)
        other = create_serving_app(Catalog(store), pool)
        buffering = httpx2.AsyncClient(transport=httpx2.ASGITransport(other), timeout=60)
        async with other.router.lifespan_context(other), buffering:
            theirs = await first_then_rest(buffering)
        return ours, theirs

    (during, rest, after), (buffered_during, buffered_rest, _) = asyncio.run(main())
    assert during == 1 and after == 0
    assert buffered_during == 0 and buffered_rest == rest


def test_leaving_a_stream_early_ends_its_completion(app, expected):
    async def main() -> tuple[ChatStream, str]:
        async with in_process(app) as http:
            async with ChatStream(http, LOCAL_BASE_URL, LONG) as stream:
                async for _ in stream:
                    break
            await until_idle(http)
            async with ChatStream(http, LOCAL_BASE_URL, CALL) as again:
                return stream, "".join(await read(again))

    stream, text = asyncio.run(main())
    assert stream.text and stream.finish_reason is None  # it never got to the end
    assert text == expected.text  # and the endpoint answers the next request


def test_a_reader_cancelled_mid_stream_ends_the_completion(app, expected):
    """The arena's case: the browser goes away, and the task reading the stream is cancelled."""

    async def main() -> str:
        async with in_process(app) as http:
            started = asyncio.Event()

            async def reader() -> None:
                async with ChatStream(http, LOCAL_BASE_URL, LONG) as stream:
                    async for _ in stream:
                        started.set()
                        await asyncio.Event().wait()  # until cancelled

            task = asyncio.create_task(reader())
            await started.wait()
            task.cancel()
            await asyncio.wait({task})
            assert task.cancelled()
            await until_idle(http)
            async with ChatStream(http, LOCAL_BASE_URL, CALL) as again:
                return "".join(await read(again))

    assert asyncio.run(main()) == expected.text


def test_an_answer_past_max_chars_stops_with_length(app, expected):
    async def main() -> ChatStream:
        async with in_process(app) as http:
            async with ChatStream(http, LOCAL_BASE_URL, LONG, max_chars=5) as stream:
                await read(stream)
            await until_idle(http)
            return stream

    stream = asyncio.run(main())
    assert stream.text == expected.text[:5] and stream.finish_reason == "length"


def test_the_same_client_streams_from_a_live_server_over_tcp(store, pool, expected):
    """What the production path (a vLLM server) looks like: httpx2's own transport, a key, a real socket."""
    wrong = "sk-wrong-" + "y" * 16
    with live(create_serving_app(Catalog(store), pool, api_key=KEY)) as base:

        async def main() -> tuple[list[str], ChatStream, ChatEndpointRefused]:
            async with httpx2.AsyncClient(timeout=60) as http:
                async with ChatStream(http, f"{base}/v1", CALL, api_key=KEY) as stream:
                    deltas = await read(stream)
                async with ChatStream(http, f"{base}/v1", LONG, api_key=KEY) as early:
                    await anext(early)
                await until_idle(http, base)  # the server saw the connection close, and stopped
                with pytest.raises(ChatEndpointRefused) as refused:
                    async with ChatStream(http, f"{base}/v1", CALL, api_key=wrong, backoff=FAST):
                        pass
                return deltas, stream, refused.value

        deltas, stream, refused = asyncio.run(main())
    assert "".join(deltas) == expected.text and len(deltas) > 1
    assert stream.finish_reason in ("stop", "length") and stream.usage is not None
    assert stream.usage.prompt_tokens == len(expected.prompt)
    assert (refused.status, refused.reason) == (401, "invalid_api_key")
    assert f"{base}/v1/chat/completions refused the request (HTTP 401)" in refused.message
    assert wrong not in refused.message and KEY not in refused.message


def test_a_refusal_carries_the_endpoints_message(app, store):
    async def main() -> ChatEndpointRefused:
        waits = Waits()
        async with in_process(app) as http:
            with pytest.raises(ChatEndpointRefused) as caught:
                async with ChatStream(
                    http, LOCAL_BASE_URL, replace(CALL, model="nobody/nothing"), backoff=FAST, sleep=waits
                ):
                    pass
        assert waits == []  # a refusal is not tried again
        return caught.value

    refused = asyncio.run(main())
    assert (refused.status, refused.reason) == (404, "model_not_found")
    assert "refused the request (HTTP 404)" in refused.message and "GET /v1/models" in refused.message
    assert str(store.root) not in refused.message and "/tmp" not in refused.message


async def open_only(base_url: str, **options: Any) -> None:
    """Send the request, and close the answer once it has begun."""
    async with httpx2.AsyncClient(timeout=10) as http, ChatStream(http, base_url, CALL, **options):
        pass


def test_an_endpoint_that_is_not_listening_is_unavailable():
    waits = Waits()

    with pytest.raises(ChatEndpointUnavailable, match="ConnectError") as caught:
        asyncio.run(open_only(f"http://127.0.0.1:{free_port()}/v1", backoff=FAST, sleep=waits))
    assert "after 3 attempts" in caught.value.message and waits == [0.01, 0.02]


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_server_is_tried_again_then_unavailable(status):
    failing = Flaky(None, failures=None, status=status)
    waits = Waits()
    with live(failing) as base, pytest.raises(ChatEndpointUnavailable) as caught:
        asyncio.run(open_only(f"{base}/v1", backoff=FAST, sleep=waits))
    assert failing.requests == 3 and waits == [0.01, 0.02]
    assert f"(last: HTTP {status}: overloaded, try later)" in caught.value.message


def test_a_busy_server_is_tried_again_before_the_first_byte(store, pool, expected):
    busy = Flaky(create_serving_app(Catalog(store), pool), failures=1, status=429, retry_after="0.3")
    waits = Waits()

    async def main(base: str) -> ChatStream:
        async with httpx2.AsyncClient(timeout=60) as http:
            async with ChatStream(http, f"{base}/v1", CALL, backoff=FAST, sleep=waits) as stream:
                await read(stream)
            return stream

    with live(busy) as base:
        stream = asyncio.run(main(base))
    assert stream.text == expected.text and stream.attempts == 2 and waits == [0.3]


def scripted(*pieces: bytes, content_type: bytes = b"text/event-stream") -> ASGIApp:
    """An endpoint that answers every request with ``pieces``, sent one by one."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content, "unknown": [1]}
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return (
        f"data: {json.dumps({'choices': [choice], 'object': 'chat.completion.chunk', **extra})}\n\n".encode()
    )


async def stream_from(app: ASGIApp) -> ChatStream:
    async with in_process(app) as http, ChatStream(http, "http://endpoint/v1", CALL, backoff=FAST) as stream:
        await read(stream)
        return stream


def test_server_sent_events_are_read_as_any_compatible_server_sends_them():
    whole = chunk("Hello") + chunk(" there", "stop")
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, "x": {}}
    stream = asyncio.run(
        stream_from(
            scripted(
                b": keep-alive\n\n",
                b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n',
                whole[:20],  # events split across reads
                whole[20:41],
                whole[41:].replace(b"\n\n", b"\r\n\r\n"),
                f"event: message\nid: 7\ndata: {json.dumps(usage)}\n\n".encode(),
                b"data: [DONE]\n\n",
                chunk("never read"),
            )
        )
    )
    assert stream.text == "Hello there" and stream.finish_reason == "stop"
    assert stream.usage == Usage(3, 2)


def test_answers_that_are_not_a_stream_of_chunks_are_refused_or_unavailable():
    refused = {
        "not a stream of server-sent events": scripted(b'{"choices": []}', content_type=b"application/json"),
        "not a chat completion chunk": scripted(b"data: <html>\n\n"),
    }
    for says, app in refused.items():
        with pytest.raises(ChatEndpointRefused, match=says):
            asyncio.run(stream_from(app))
    broken = {
        "the model failed": scripted(
            chunk("Hel"), b'data: {"error": {"message": "the model failed", "code": "internal_error"}}\n\n'
        ),
        "the stream ended before the answer did": scripted(chunk("Hel")),
    }
    for says, app in broken.items():
        with pytest.raises(ChatEndpointUnavailable, match=says):
            asyncio.run(stream_from(app))


async def _failing(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        raise RuntimeError("/srv/secret/models exploded")


async def _silent(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await asyncio.Event().wait()


def test_an_app_that_fails_or_hangs_before_answering_is_an_httpx_error():
    async def main() -> list[ChatEndpointUnavailable]:
        found = []
        for app, error in ((_failing, httpx2.RemoteProtocolError), (_silent, httpx2.ReadTimeout)):
            transport = InProcessTransport(app, close_grace_s=0.01)  # _silent never ends by itself
            async with httpx2.AsyncClient(transport=transport, timeout=0.2) as http:
                with pytest.raises(error):
                    await http.get("http://app/v1/models")
                with pytest.raises(ChatEndpointUnavailable) as caught:
                    async with ChatStream(http, "http://app/v1", CALL, backoff=FAST, sleep=Waits()):
                        pass
                found.append(caught.value)
        return found

    failed, silent = asyncio.run(main())
    assert "RemoteProtocolError: the in-process app failed (RuntimeError)" in failed.message
    assert "/srv" not in failed.message and "ReadTimeout" in silent.message


def test_the_apps_lifespan_runs_with_the_client():
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/events")
    async def seen() -> list[str]:
        return list(events)

    @asynccontextmanager
    async def failing(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no GPU")
        yield

    async def main() -> list[str]:
        async with in_process(app) as http:
            answer = (await http.get("http://app/events")).json()
        with pytest.raises(httpx2.ConnectError, match="failed to start"):
            async with in_process(FastAPI(lifespan=failing)):
                pass
        return list(answer)

    assert asyncio.run(main()) == ["startup"] and events == ["startup", "shutdown"]


def test_the_local_endpoint_is_the_model_endpoint_in_this_process(store, expected):
    settings = Settings(model_store=store.root, serve_models="good/tiny", serve_api_key=KEY)
    endpoint = local_endpoint(settings)

    async def main() -> ChatStream:
        async with endpoint:
            async with ChatStream(endpoint.client, endpoint.base_url, CALL) as stream:
                await read(stream)
            with pytest.raises(ChatEndpointRefused, match="HTTP 404"):  # only the models it was told
                async with ChatStream(endpoint.client, endpoint.base_url, replace(CALL, model="good/other")):
                    pass
            return stream

    stream = asyncio.run(main())
    assert [m.id for m in endpoint.catalog.served()] == ["good/tiny"]
    assert stream.text == expected.text and endpoint.client.is_closed
