"""Serving the API with uvicorn, so that even a request uvicorn cannot parse is answered in the one error
shape (uvicorn's own answer to it is plain text)."""

from __future__ import annotations

from fastapi import FastAPI

from backend import asgi
from backend.api.errors import error_json


def run(api: FastAPI, host: str, port: int) -> None:
    """Serve ``api`` until the process is stopped, an unparsable request answered in the one error shape."""
    asgi.serve(api, host, port, unparsable=error_json(400, "bad_request", asgi.UNPARSABLE))
