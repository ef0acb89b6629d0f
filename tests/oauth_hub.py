"""A small, honest OAuth authorization server that speaks the Hub's OAuth endpoints, served by uvicorn on
127.0.0.1 (a free port) in a thread: what "Sign in with Hugging Face" talks to in tests.

- ``GET /oauth/authorize``: the signed-in Hub user (``hub.user``) allows the app, or declines when
  ``hub.consent`` is false; a code bound to the client, the redirect URL, the scopes and the PKCE challenge
  is sent back to the (registered) redirect URL with the state. An unknown client or redirect URL gets an
  error page of the Hub, never a redirect (RFC 6749 4.1.2.1).
- ``POST /oauth/token``: the app's id and secret (HTTP Basic or in the form), a known unused unexpired code,
  the same redirect URL, and the verifier whose S256 is the challenge; else the RFC's JSON errors.
- ``GET /oauth/userinfo``: the bearer must be a token it issued.

``userinfo`` (a JSON value, or raw bytes) replaces the userinfo answer to try bad ones; ``failing`` makes
the token endpoint answer 503.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

CODE_SECONDS = 60


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    user: str
    scope: str
    expires: float


@dataclass
class OAuthHub:
    client_id: str = "leaderboard-app"
    client_secret: str = field(default_factory=lambda: "secret-" + secrets.token_hex(16))
    redirect_uris: tuple[str, ...] = (
        "http://testserver/oauth/callback",
        "https://testserver/oauth/callback",
    )
    user: str = "alice"  # who is signed in to the Hub in the browser
    consent: bool = True
    failing: bool = False
    userinfo: Any = None  # None: the real answer; else this JSON value (bytes: sent as they are)
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> user
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/authorize", self.authorize),
                Route("/oauth/token", self.token, methods=["POST"]),
                Route("/oauth/userinfo", self.user_info),
            ]
        )

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("redirect_uri") not in self.redirect_uris:
            return PlainTextResponse("unknown OAuth app or redirect URL", 400)
        back = q["redirect_uri"]

        def redirect(**params: str) -> Response:
            return RedirectResponse(f"{back}?{urlencode({**params, 'state': q.get('state', '')})}", 302)

        if q.get("response_type") != "code":
            return redirect(error="unsupported_response_type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return redirect(error="invalid_request", error_description="PKCE S256 is required")
        if "openid" not in q.get("scope", "").split():
            return redirect(error="invalid_scope")
        if not self.consent:
            return redirect(error="access_denied", error_description="The user denied access")
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            self.client_id, back, q["code_challenge"], self.user, q["scope"], time.time() + CODE_SECONDS
        )
        return redirect(code=code)

    async def token(self, request: Request) -> Response:
        if self.failing:
            return PlainTextResponse("upstream trouble", 503)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            return JSONResponse({"error": "invalid_client"}, 401)
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        grant = self.grants.pop(form.get("code", ""), None)  # a code is good once
        if grant is None or grant.expires < time.time() or grant.client_id != client_id:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown or used code"}, 400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri differs"}, 400)
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if not verifier or not secrets.compare_digest(challenge, grant.challenge):
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400
            )
        access = "hf_oauth_" + secrets.token_urlsafe(24)
        self.tokens[access] = grant.user
        return JSONResponse(
            {"access_token": access, "token_type": "bearer", "expires_in": 28800, "scope": grant.scope}
        )

    async def user_info(self, request: Request) -> Response:
        user = self.tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if user is None:
            return JSONResponse({"error": "invalid_token"}, 401)
        if isinstance(self.userinfo, bytes):
            return Response(self.userinfo, media_type="application/json")
        if self.userinfo is not None:
            return JSONResponse(self.userinfo)
        return JSONResponse(
            {"sub": "64f0" + user.encode().hex(), "name": user.title(), "preferred_username": user}
        )


class Served:
    """``hub`` under uvicorn on 127.0.0.1, on a port of its own, until ``close()``."""

    def __init__(self, hub: OAuthHub) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        hub.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(hub.app(), log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the OAuth hub did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


def closed_port() -> str:
    """A URL where nothing listens (a port bound, then released): a Hub that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
