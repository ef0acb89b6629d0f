"""Who signs in with their Hugging Face account: the Hub's OAuth 2 authorization code flow, with PKCE (S256).

Three endpoints of the Hub: ``/oauth/authorize``, where the person signs in on the Hub and allows the app,
which sends them back with a code; ``/oauth/token``, where the code is exchanged for an access token (the
app's id and secret as HTTP Basic, the PKCE verifier alongside); ``/oauth/userinfo``, which names the user
(``preferred_username``). Only the name is kept: the access token is used once, here, and dropped.

Every answer of the Hub is checked for type and size before it is used, and every failure is one of three
errors: OAuthRefused (sign in again), OAuthUnavailable (try later), OAuthFailed (the Hub's answer is not
usable, or it refuses this deployment's app). No message holds the secret, a token or the code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx2

from backend.domain import is_hub_name, preview
from backend.errors import OAuthFailed, OAuthRefused, OAuthUnavailable

TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 65536
MAX_TOKEN_CHARS = 4096
#: An OAuth error code (RFC 6749 5.2: printable ASCII; in practice snake_case) and its description, as
#: quoted in our messages.
OAUTH_ERROR_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
MAX_DESCRIPTION_CHARS = 200
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+\Z")


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (64 URL-safe characters) and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def oauth_error(value: object, description: object = None) -> str:
    """An OAuth ``error`` (and its description) from the Hub as a message may quote it: checked, cut short."""
    if not isinstance(value, str) or not OAUTH_ERROR_RE.match(value):
        return "an error"
    if isinstance(description, str) and description.strip() and description.isprintable():
        text = description.strip()
        if len(text) > MAX_DESCRIPTION_CHARS:
            text = text[: MAX_DESCRIPTION_CHARS - 3] + "..."
        return f"{value}: {text}"
    return value


@dataclass(frozen=True)
class HubOAuth:
    """The leaderboard's OAuth app on a Hub (``endpoint``, e.g. https://huggingface.co)."""

    endpoint: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: str = "openid profile"
    timeout: float = TIMEOUT_SECONDS

    def authorize_url(self, redirect_uri: str, state: str, challenge: str) -> str:
        """Where to send the person's browser to sign in on the Hub."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.scopes,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self.endpoint.rstrip('/')}/oauth/authorize?{query}"

    def user(self, code: str, verifier: str, redirect_uri: str) -> str:
        """The Hub user name behind the sign-in ``code`` the Hub sent back."""
        return self._user_of(self._access_token(code, verifier, redirect_uri))

    def _access_token(self, code: str, verifier: str, redirect_uri: str) -> str:
        status, answer = self._call(
            "POST",
            "/oauth/token",
            "exchange the sign-in code",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": self.client_id,
                "code_verifier": verifier,
            },
            auth=httpx2.BasicAuth(self.client_id, self.client_secret),
        )
        if status == 401 or (status == 400 and _field(answer, "error") == "invalid_client"):
            raise OAuthFailed(
                "the Hub does not accept this deployment's OAuth app (its id or secret): an admin checks "
                "LEADERBOARD_OAUTH_CLIENT_ID and LEADERBOARD_OAUTH_CLIENT_SECRET; meanwhile, sign in with an "
                "API token"
            )
        if 400 <= status < 500:
            reason = oauth_error(_field(answer, "error"), _field(answer, "error_description"))
            raise OAuthRefused(f"the Hub refused the sign-in code ({reason}): sign in again")
        if status != 200:
            raise OAuthFailed(f"the Hub's token endpoint answered HTTP {status}: sign in again")
        token = _field(answer, "access_token")
        token_type = _field(answer, "token_type")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _PRINTABLE_ASCII.match(token):
            raise OAuthFailed("the Hub's token answer has no valid access token: sign in again")
        if token_type is not None and (not isinstance(token_type, str) or token_type.lower() != "bearer"):
            raise OAuthFailed(f"the Hub's token answer is of type {preview(token_type, 40)}, not bearer")
        return token

    def _user_of(self, access_token: str) -> str:
        status, answer = self._call(
            "GET",
            "/oauth/userinfo",
            "name the user",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        if status != 200:
            raise OAuthFailed(f"the Hub's userinfo endpoint answered HTTP {status}: sign in again")
        name = _field(answer, "preferred_username")
        if not is_hub_name(name):
            raise OAuthFailed(
                f"the Hub's userinfo answer names no valid Hub user (preferred_username {preview(name, 60)})"
            )
        return name

    def _call(self, method: str, path: str, what: str, **request: Any) -> tuple[int, Any]:
        """The status and JSON body (None when it is not JSON) of one call; OAuthUnavailable when the Hub
        cannot be reached or is failing (5xx, 429), OAuthFailed for an answer past MAX_ANSWER_BYTES."""
        url = f"{self.endpoint.rstrip('/')}{path}"
        headers = {"Accept": "application/json", **request.pop("headers", {})}
        try:
            with (
                httpx2.Client(timeout=self.timeout) as client,
                client.stream(method, url, headers=headers, **request) as response,
            ):
                status = response.status_code
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise OAuthFailed(
                            f"the Hub's answer to {what} is larger than {MAX_ANSWER_BYTES} bytes"
                        )
        except (httpx2.HTTPError, OSError) as exc:  # refused connections, timeouts, broken answers
            raise OAuthUnavailable(
                f"the Hub cannot be reached to {what} ({type(exc).__name__}): try again later, or sign in "
                "with an API token"
            ) from exc
        if status == 429 or status >= 500:
            raise OAuthUnavailable(
                f"the Hub could not {what} (HTTP {status}): try again later, or sign in with an API token"
            )
        try:
            return status, json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past what the parser takes
            return status, None


def _field(answer: Any, name: str) -> Any:
    return answer.get(name) if isinstance(answer, dict) else None
