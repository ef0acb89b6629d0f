"""What both HTTP servers (the API and the model endpoint) share below their apps, each in its own error
shape: uvicorn, run the same way, with a JSON answer to a request it cannot parse (uvicorn's own is plain
text), and the last-resort middleware that turns an exception no handler knows into a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

import h11
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

UNPARSABLE = (
    "the request is not valid HTTP/1.1: check its request line and headers (Content-Length must be a "
    "number of bytes)"
)


def _uncounted(scope: Scope) -> None:
    pass


class UnexpectedErrors:
    """The last resort, innermost of the middleware: an exception no handler knows becomes ``answer()``, a
    500 in the server's error shape, and is logged on ``log`` once with its traceback (``count`` is told of
    it, even when the response had begun and the client sees it cut short). A handler for Exception would
    run in Starlette's ServerErrorMiddleware, which re-raises the exception for the server to log it a
    second time."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        answer: Callable[[], Response],
        log: logging.Logger,
        count: Callable[[Scope], None] = _uncounted,
    ) -> None:
        self.app, self.answer, self.log, self.count = app, answer, log, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            self.log.exception("unexpected error", extra={"path": scope["path"]})
            self.count(scope)
            if not started:  # else the client sees the answer cut short; nothing else can be sent
                await self.answer()(scope, receive, send)


def answering_unparsable_with(body: bytes) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, with its answer to an unparsable request (a Content-Length of -1, a
    header line without a colon) a 400 of ``body``, JSON in the server's error shape."""

    class JsonErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JsonErrorH11Protocol


def serve(app: ASGIApp, host: str, port: int, *, unparsable: bytes) -> None:
    """Serve ``app`` until the process is stopped, a request uvicorn cannot parse answered with
    ``unparsable``. No access log of uvicorn's (each server logs its own requests, without their query
    strings) and no Server header."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        http=answering_unparsable_with(unparsable),
        access_log=False,
        log_config=None,
        server_header=False,
    )
