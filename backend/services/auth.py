"""Who is calling: bearer tokens to identities with a role.

Two kinds of token. API tokens (``lb_...``, `leaderboard admin token create`) are looked up by hash in the
database: air-gapped deployments and tests. Any other token is taken for a Hugging Face token and verified
with the Hub's whoami (when Hub sign-in is on); the answer is cached briefly, keyed by the token's hash, so
the Hub's rate limit is not hit on every vote. Hub users named in LEADERBOARD_API_ADMINS are admins.

Hub sign-in is off with LEADERBOARD_API_HUB_AUTH=false, and when huggingface_hub is offline (HF_HUB_OFFLINE):
the Hub cannot be asked then, so a token that is not an API token is simply not valid (401), never "the Hub
cannot be reached" (503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backend.errors import Forbidden, InvalidInput, Unauthorized
from backend.hub.identity import HubIdentity, IdentityProvider
from backend.services.submissions import check_user
from backend.settings import Settings
from backend.storage.tokens import TOKEN_PREFIX, ApiToken, TokenRepository, token_hash

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class Identity:
    user: str
    is_admin: bool
    via: str  # "api-token" or "hub"

    def require_admin(self) -> Identity:
        if not self.is_admin:
            raise Forbidden(f"{self.user} is not an admin: this needs an admin token")
        return self


class Authenticator:
    def __init__(
        self,
        tokens: TokenRepository,
        hub: IdentityProvider | None,
        admins: frozenset[str],
        cache_seconds: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``hub`` None: Hugging Face tokens are not accepted (API tokens only)."""
        self.tokens = tokens
        self.hub = hub
        self.admins = admins
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.monotonic = monotonic
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Identity:
        """The identity behind ``token``; Unauthorized when it is not a valid, live token."""
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isprintable() or " " in token:
            raise Unauthorized("the bearer token is malformed")
        if token.startswith(TOKEN_PREFIX):
            record = self.tokens.find(token)
            if record is None:
                raise Unauthorized("this API token is not valid (unknown or revoked)")
            return Identity(record.user, record.is_admin, "api-token")
        return self._hub_identity(token)

    def _hub_identity(self, token: str) -> Identity:
        if self.hub is None:
            raise Unauthorized(
                "this token is not a valid API token, and Hub sign-in is off on this deployment (Hugging Face "
                "tokens are not accepted): ask an admin for an API token"
            )
        key = token_hash(token)
        now = self.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        user = self.hub.whoami(token)
        identity = Identity(user, user in self.admins, "hub")
        with self._lock:
            self._cache[key] = (now + self.cache_seconds, identity)
            if len(self._cache) > 10_000:  # bounded: forget expired entries
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        return identity

    def create_token(self, user: str, is_admin: bool, created_by: str) -> tuple[ApiToken, str]:
        try:
            user = check_user(user)
        except InvalidInput as exc:
            raise InvalidInput(exc.message.replace(" (pass --user NAME)", "")) from exc
        record, token = self.tokens.create(user, is_admin, created_by, self.clock())
        log.info("api token created", extra={"token_id": record.id, "user": user, "admin": is_admin})
        return record, token

    def revoke_token(self, token_id: int) -> ApiToken:
        record = self.tokens.revoke(token_id, self.clock())
        log.info("api token revoked", extra={"token_id": token_id, "user": record.user})
        return record


def hub_sign_in(settings: Settings) -> bool:
    """Whether Hugging Face tokens are verified with the Hub: LEADERBOARD_API_HUB_AUTH, unless
    huggingface_hub is offline (HF_HUB_OFFLINE), when the Hub cannot be asked."""
    from huggingface_hub import constants

    return settings.api_hub_auth and not constants.HF_HUB_OFFLINE


def build_authenticator(
    settings: Settings, tokens: TokenRepository, clock: Callable[[], datetime]
) -> Authenticator:
    """The authenticator the settings describe: for the HTTP API, and for the CLI's token commands."""
    return Authenticator(
        tokens,
        HubIdentity() if hub_sign_in(settings) else None,
        frozenset(name.strip() for name in settings.api_admins.split(",") if name.strip()),
        settings.api_token_cache_seconds,
        clock,
    )
