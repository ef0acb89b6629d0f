"""The error responses each kind of operation documents (all in the one ErrorBody shape)."""

from __future__ import annotations

from typing import Any

from backend.api.schemas import ErrorBody

_WHY = {
    401: "No token, or a token that is not valid.",
    403: "The token is valid but not allowed to do this (admin endpoints).",
    404: "No such request, token or published table.",
    409: "The request's status does not allow this, or the vote or submission exists already.",
    413: "The request body is too large.",
    422: "Invalid input: the message names the field, or the submission rule that failed and its fix.",
    429: "Too many requests of this kind from this user: see Retry-After.",
    502: "The results target (a Hub dataset repo) could not be read now.",
    503: "The database, the Hub or the model store cannot be reached now.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _WHY[status]} for status in statuses}


READ = errors(422, 503)
WRITE = errors(401, 403, 404, 409, 413, 422, 429, 503)
ADMIN = errors(401, 403, 404, 409, 413, 422, 503)
