"""What both HTTP servers (the API and the model endpoint) share below their apps, each in its own error
shape: uvicorn, run the same way, with a JSON answer to a request it cannot parse (uvicorn's own is plain
text)."""

from __future__ import annotations

import h11
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

UNPARSABLE = (
    "the request is not valid HTTP/1.1: check its request line and headers (Content-Length must be a "
    "number of bytes)"
)


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
