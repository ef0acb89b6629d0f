"""Our model endpoint served in this process, to an httpx2.AsyncClient: the embedded default and the tests
stream from `leaderboard serve-models`' own app without running a second server.

InProcessTransport puts any ASGI app behind an httpx2.AsyncClient and streams its answers as the app sends
them (httpx2's ASGITransport holds the body back until the app has finished), so that the arena can show a
model's answer as it is written; local_endpoint is the model endpoint's app over LEADERBOARD_MODEL_STORE
behind such a client. Stream from it with backend.serving.streaming.ChatStream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx2
from starlette.types import ASGIApp, Message

from backend.serving.models import Catalog
from backend.serving.server import serving_app
from backend.settings import Settings

#: How long an app told the client went away (http.disconnect) may take to end before it is cancelled.
CLOSE_GRACE_S = 5.0
#: The base URL ChatStream takes for the in-process endpoint (the host is never resolved).
LOCAL_BASE_URL = "http://local-models/v1"
_RETURNED: Message = {"type": "app.returned"}  # what the reader gets once the app has returned


class _Exchange:
    """One request to the app, which runs in a task of its own. What it sends waits in a queue of one
    message for the reader (a socket's backpressure: an app that nobody reads from waits)."""

    def __init__(
        self, app: ASGIApp, scope: dict[str, Any], request: httpx2.Request, transport: InProcessTransport
    ) -> None:
        if not isinstance(request.stream, httpx2.AsyncByteStream):
            raise TypeError("InProcessTransport serves an httpx2.AsyncClient")
        self.request, self.transport = request, transport
        self.body: AsyncIterator[bytes] | None = request.stream.__aiter__()
        self.sent: asyncio.Queue[Message | Exception] = asyncio.Queue(maxsize=1)
        self.disconnected = asyncio.Event()
        self.complete = self.closing = False
        self.task = asyncio.create_task(self._run(app, scope))
        transport.open.add(self)

    async def _run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self._receive, self._send)
        except Exception as exc:  # the reader raises it as an httpx2 error
            await self._send(exc)
        else:
            await self._send(_RETURNED)

    async def _receive(self) -> Message:
        if self.body is not None:
            chunk = await anext(self.body, None)
            if chunk is not None:
                return {"type": "http.request", "body": chunk, "more_body": True}
            self.body = None
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message | Exception) -> None:
        if not self.closing:  # once the reader has gone, what the app sends goes nowhere
            await self.sent.put(message)

    async def next(self, timeout: float | None) -> Message:
        """The app's next message; its failure, or its silence past ``timeout``, as httpx2's errors."""
        try:
            item = await asyncio.wait_for(self.sent.get(), timeout)
        except TimeoutError:
            raise httpx2.ReadTimeout(
                "the in-process app sent nothing in time", request=self.request
            ) from None
        if isinstance(item, Exception):
            message = f"the in-process app failed ({type(item).__name__})"
            raise httpx2.RemoteProtocolError(message, request=self.request) from item
        if item is _RETURNED:
            message = "the in-process app returned before its answer was complete"
            raise httpx2.RemoteProtocolError(message, request=self.request)
        return item

    async def close(self) -> None:
        """Tell the app the client went away and wait for it to end (its own cleanup runs), cancelling it
        past the transport's grace."""
        if not self.closing:
            self.closing = True
            while not self.sent.empty():  # an app waiting on the full queue sees its send return...
                self.sent.get_nowait()
            await asyncio.sleep(0)  # ...and goes on to its next wait (ours: for the next token)...
            self.disconnected.set()  # ...where the disconnect reaches it, so that its cleanup runs there
        await _end(self.task, self.transport.close_grace_s)
        self.transport.open.discard(self)


async def _end(task: asyncio.Task[None], grace_s: float) -> None:
    """Wait ``grace_s`` for ``task`` to end, then cancel it and wait for that."""
    if not task.done():
        await asyncio.wait({task}, timeout=grace_s)
    if not task.done():
        task.cancel()
        await asyncio.wait({task})


class _Body(httpx2.AsyncByteStream):
    def __init__(self, exchange: _Exchange, timeout: float | None) -> None:
        self.exchange, self.timeout = exchange, timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.exchange.complete:
            message = await self.exchange.next(self.timeout)
            if message["type"] == "http.response.body":
                self.exchange.complete = not message.get("more_body", False)
                if message.get("body"):
                    yield message["body"]

    async def aclose(self) -> None:
        await self.exchange.close()


class _Lifespan:
    """The app's ASGI lifespan, run as uvicorn's "auto" runs it: an app that takes no part is served
    without one."""

    def __init__(self, app: ASGIApp) -> None:
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.from_app: asyncio.Queue[Message | Exception] = asyncio.Queue()
        self.state: dict[str, Any] = {}
        self.running = self.failed = False
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.task = asyncio.create_task(self._run(app, scope))

    async def _run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.to_app.get, self.from_app.put)
        except Exception as exc:
            self.from_app.put_nowait(exc)
        else:
            self.from_app.put_nowait(_RETURNED)

    async def startup(self) -> None:
        self.to_app.put_nowait({"type": "lifespan.startup"})
        reply = await self.from_app.get()
        self.running = isinstance(reply, dict) and reply["type"] == "lifespan.startup.complete"
        self.failed = isinstance(reply, dict) and reply["type"] == "lifespan.startup.failed"

    async def shutdown(self, grace_s: float) -> None:
        if self.running and not self.task.done():
            self.to_app.put_nowait({"type": "lifespan.shutdown"})
        await _end(self.task, grace_s if self.running else 0)


class InProcessTransport(httpx2.AsyncBaseTransport):
    """An ASGI app of this process behind an httpx2.AsyncClient, each answer streamed as the app sends it.

    Closing a response early sends the app http.disconnect and waits ``close_grace_s`` for it to end
    before cancelling it. The app's lifespan
    starts with the client (``async with``) or its first request, and ends when the client is closed:
    close it on the event loop that used it."""

    def __init__(self, app: ASGIApp, *, close_grace_s: float = CLOSE_GRACE_S) -> None:
        self.app, self.close_grace_s = app, close_grace_s
        self.open: set[_Exchange] = set()  # the answers not closed yet
        self._lifespan: _Lifespan | None = None
        self._starting = asyncio.Lock()

    async def __aenter__(self) -> InProcessTransport:
        await self._start()
        return self

    async def _start(self) -> _Lifespan:
        async with self._starting:
            if self._lifespan is None:
                self._lifespan = _Lifespan(self.app)
                await self._lifespan.startup()
        if self._lifespan.failed:
            raise httpx2.ConnectError("the in-process app failed to start (its lifespan startup failed)")
        return self._lifespan

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        lifespan = await self._start()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 0),
            "root_path": "",
            "state": dict(lifespan.state),
        }
        timeout = request.extensions.get("timeout", {}).get("read")
        exchange = _Exchange(self.app, scope, request, self)
        try:
            start = await exchange.next(timeout)
            if start["type"] != "http.response.start":
                raise httpx2.RemoteProtocolError("the in-process app answered out of order", request=request)
        except BaseException:
            await exchange.close()
            raise
        return httpx2.Response(
            start["status"], headers=start.get("headers", []), stream=_Body(exchange, timeout)
        )

    async def aclose(self) -> None:
        """End the answers still open, then the app's lifespan."""
        for exchange in list(self.open):
            await exchange.close()
        if self._lifespan is not None:
            await self._lifespan.shutdown(self.close_grace_s)


@dataclass(frozen=True)
class LocalEndpoint:
    """Our model endpoint in this process: ``ChatStream(endpoint.client, endpoint.base_url, call)``.
    Close it (``await endpoint.aclose()``, or ``async with``) on the event loop that used it: that ends
    the answers still streaming and the app's lifespan (its worker threads)."""

    client: httpx2.AsyncClient
    catalog: Catalog  # the models it serves
    base_url: str = LOCAL_BASE_URL

    async def __aenter__(self) -> LocalEndpoint:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.client.__aexit__(kind, error, trace)

    async def aclose(self) -> None:
        await self.client.aclose()


def local_endpoint(
    settings: Settings, models: Sequence[str] = (), *, timeout_s: float = 300.0
) -> LocalEndpoint:
    """`leaderboard serve-models`' app (the same one, over LEADERBOARD_MODEL_STORE) behind an in-process
    client: the embedded default and the tests stream from it without a second server. Build it once;
    ``timeout_s`` bounds each wait for the app (a model's first load included)."""
    app, catalog = serving_app(settings, models)
    key = settings.serve_api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    client = httpx2.AsyncClient(
        transport=InProcessTransport(app),
        base_url=LOCAL_BASE_URL.removesuffix("/v1"),
        headers=headers,
        timeout=httpx2.Timeout(timeout_s),
    )
    return LocalEndpoint(client, catalog)
