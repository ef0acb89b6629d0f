"""Serving the API with uvicorn, so that even a request uvicorn cannot parse is answered in the one error
shape (uvicorn's own answer to it is plain text)."""

from __future__ import annotations

import h11
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from backend.api.errors import error_json

UNPARSABLE = (
    "the request is not valid HTTP/1.1: check its request line and headers (Content-Length must be a "
    "number of bytes)"
)


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with its answer to an unparsable request (a Content-Length of -1, a
    header line without a colon) in the one error shape."""

    def send_400_response(self, msg: str) -> None:
        body = error_json(400, "bad_request", UNPARSABLE)
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


def run(api: FastAPI, host: str, port: int) -> None:
    """Serve ``api`` until the process is stopped. No access log of uvicorn's (ours names the user and
    never the query string) and no Server header."""
    import uvicorn

    uvicorn.run(
        api,
        host=host,
        port=port,
        http=JsonErrorH11Protocol,
        access_log=False,
        log_config=None,
        server_header=False,
    )
