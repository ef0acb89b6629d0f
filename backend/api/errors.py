"""One JSON error shape for every error the API returns: {"error": {"code", "message", "status", ...}}.

LeaderboardError carries its own code and status; validation errors name the fields (never echoing the
values sent); unknown routes and methods get the same shape; anything unexpected is a 500 with no detail
(internal_error, sent by asgi.UnexpectedErrors), its traceback logged on the server only, once. No message
names a path of the server.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from backend.errors import BattleRefused, LeaderboardError, RateLimited, SubmissionRejected
from backend.services.redact import strip_server_paths

log = logging.getLogger(__name__)

_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape. Messages (and a rejection's fix) reach the client without server paths."""
    extra = {k: strip_server_paths(v) if isinstance(v, str) else v for k, v in extra.items() if v}
    return {"error": {"code": code, "message": strip_server_paths(message), "status": status, **extra}}


def error_json(status: int, code: str, message: str) -> bytes:
    """The one error shape as bytes, for answers sent below FastAPI (middleware, the HTTP protocol)."""
    return json.dumps(error_body(status, code, message)).encode()


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, **extra), status_code=status, headers=headers)


def _count(request: Request, code: str) -> None:
    count_error(request.app, code)


def count_error(app: Any, code: str) -> None:
    errors = getattr(app.state, "error_counter", None)
    if errors is not None:
        errors.labels(code=code).inc()


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first matching route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(api: FastAPI) -> None:
    @api.exception_handler(LeaderboardError)
    async def leaderboard_error(request: Request, exc: LeaderboardError) -> JSONResponse:
        _count(request, exc.code)
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(int(exc.retry_after_s + 0.999))}
        if exc.http_status >= 500:
            log.error(
                "request failed", extra={"code": exc.code, "error": exc.message, "path": request.url.path}
            )
        extra: dict[str, Any] = {}
        if isinstance(exc, SubmissionRejected | BattleRefused):
            extra = {"rule": exc.rule, "fix": exc.fix}
        return error_response(exc.http_status, exc.code, exc.message, headers, **extra)

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count(request, "invalid_input")
        fields = [
            {"location": [str(part) for part in err.get("loc", ())], "problem": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        names = ", ".join(".".join(f["location"][1:]) or f["location"][0] for f in fields if f["location"])
        return error_response(422, "invalid_input", f"invalid input: {names or 'the request'}", fields=fields)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body: invalid input like any other
            _count(request, "invalid_input")
            return error_response(
                422, "invalid_input", f"invalid input: the request body cannot be read ({exc.detail})"
            )
        code = _CODES.get(exc.status_code, "http_error")
        _count(request, code)
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        message = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else phrase
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {"Allow": ", ".join(_allowed_methods(request))}
        return error_response(exc.status_code, code, str(message), headers)


def internal_error() -> JSONResponse:
    """The 500 of an exception no handler knows (asgi.UnexpectedErrors): no detail, it is logged."""
    return error_response(500, "internal_error", "internal error: it is logged on the server")


def count_internal_error(scope: Scope) -> None:
    if "app" in scope:
        count_error(scope["app"], "internal_error")
