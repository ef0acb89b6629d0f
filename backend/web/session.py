"""Sign-in sessions of the pages: a signed cookie, and a CSRF token for every form that changes something.

The cookie holds who is signed in, how (an API token, identified by its hash, so that revoking the token ends
the session on its next use), the CSRF token of its forms and when it expires, signed with HMAC-SHA256
(LEADERBOARD_SESSION_SECRET; unset: a secret of this process, so sessions end when the server restarts).
It is HttpOnly, SameSite=Lax, and Secure when the page was served over HTTPS. Nothing in it is secret from
its owner; the token itself is never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass

from starlette.requests import Request
from starlette.responses import Response

from backend.services.auth import Identity

COOKIE = "lb_session"
MAX_COOKIE_CHARS = 2048


@dataclass(frozen=True)
class Session:
    user: str
    is_admin: bool
    via: str  # how they signed in: "api-token" or "hub" (the Identity's)
    token_hash: str  # of the API token signed in with: the session lives as long as the token
    csrf: str
    expires: float  # seconds since the epoch


class Sessions:
    def __init__(self, secret: str | None, hours: float) -> None:
        self.key = (secret or secrets.token_urlsafe(32)).encode()
        self.seconds = hours * 3600

    def new(self, identity: Identity, token_hash: str) -> Session:
        return Session(
            identity.user,
            identity.is_admin,
            identity.via,
            token_hash,
            secrets.token_urlsafe(24),
            time.time() + self.seconds,
        )

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.key, payload, hashlib.sha256).hexdigest()

    def write(self, response: Response, request: Request, session: Session) -> None:
        payload = base64.urlsafe_b64encode(json.dumps(asdict(session)).encode())
        response.set_cookie(
            COOKIE,
            f"{payload.decode()}.{self._sign(payload)}",
            max_age=int(self.seconds),
            httponly=True,
            samesite="lax",
            secure=is_https(request),
            path="/",
        )

    def read(self, request: Request) -> Session | None:
        """The request's valid, unexpired session, or None (no cookie, a forged or damaged one, expired)."""
        value = request.cookies.get(COOKIE, "")
        payload, _, signature = value.partition(".")
        if not payload or len(value) > MAX_COOKIE_CHARS:
            return None
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            session = Session(**json.loads(base64.urlsafe_b64decode(payload)))
        except (ValueError, TypeError):
            return None
        return session if session.expires > time.time() else None

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/")


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def csrf_matches(session: Session | None, sent: str | None) -> bool:
    return session is not None and sent is not None and hmac.compare_digest(session.csrf, sent)
