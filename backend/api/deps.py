"""What every route needs, from the FastAPI app's state: the composition root, who is calling, the limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.api.limits import RateLimiter
from backend.app import App
from backend.domain import preview
from backend.errors import InvalidInput, Unauthorized
from backend.services.auth import Authenticator, Identity
from backend.services.leaderboard import LeaderboardService

bearer = HTTPBearer(
    auto_error=False,
    description="A Hugging Face token (verified with the Hub) or an API token (`leaderboard admin token create`).",
)
#: For operations where a token is optional (it shows more): OpenAPI's "no auth, or bearer".
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}, {"HTTPBearer": []}]}


@dataclass
class Context:
    app: App
    auth: Authenticator
    limiter: RateLimiter
    leaderboard: LeaderboardService


def context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


Ctx = Annotated[Context, Depends(context)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def optional_identity(request: Request, ctx: Ctx, credentials: Credentials) -> Identity | None:
    """The caller when a token is sent (an invalid one is refused); None without one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    if credentials is None:
        raise Unauthorized("the Authorization header must be `Bearer <token>`")
    identity = ctx.auth.authenticate(credentials.credentials)
    request.state.user = identity.user
    return identity


def identity(caller: Annotated[Identity | None, Depends(optional_identity)]) -> Identity:
    if caller is None:
        raise Unauthorized()
    return caller


def admin(caller: Annotated[Identity, Depends(identity)]) -> Identity:
    return caller.require_admin()


User = Annotated[Identity, Depends(identity)]
Admin = Annotated[Identity, Depends(admin)]
MaybeUser = Annotated[Identity | None, Depends(optional_identity)]


def _query_names(dependant: Any) -> set[str]:
    """The query parameters an operation takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query_only(request: Request) -> None:
    """A query parameter the operation does not take is refused (422), not ignored: a misspelt filter must
    not quietly answer as if it had not been given. (Operations that document no 422 take none to check.)"""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or 422 not in getattr(route, "responses", {}):
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise InvalidInput(f"unknown query parameter {preview(unknown[0])}: this operation takes {takes}")
