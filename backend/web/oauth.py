"""Sign in to the pages with a Hugging Face account: ``/oauth/login`` sends the browser to the Hub,
``/oauth/callback`` takes it back, signed in.

The login keeps a random state and the PKCE verifier in a short-lived cookie (HttpOnly, SameSite=Lax, path
/oauth, Secure behind HTTPS); the callback signs in only when the Hub sends back that state (so no other
site can sign a browser in as someone else). The session is the pages' usual cookie, with via "hub": a Hub
user named in LEADERBOARD_API_ADMINS is an admin, as with a Hugging Face token at the API. The Hub's access
token is never stored. Every failure is a page that says what to do, never a server error.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from backend.api.deps import Ctx
from backend.errors import LeaderboardError, OAuthRefused, OAuthUnavailable
from backend.hub.oauth import HubOAuth, oauth_error, pkce_pair
from backend.services.auth import Identity
from backend.settings import Settings
from backend.web.session import is_https
from backend.web.view import problem, sessions

log = logging.getLogger(__name__)

STATE_COOKIE = "lb_oauth"
STATE_SECONDS = 600  # from the login to the callback: the time to sign in on the Hub
MAX_STATE_COOKIE_CHARS = 256
MAX_CODE_CHARS = 2048
NOT_SET_UP = (
    "sign-in with Hugging Face is not set up on this deployment: sign in with an API token (an admin "
    "creates one with `leaderboard admin token create USER`)"
)
EXPIRED = (
    "this sign-in expired or was started in another browser (its state does not match): start it again "
    "from the sign-in page"
)


def hub_oauth(settings: Settings) -> HubOAuth | None:
    """The deployment's OAuth app on the Hub, or None when LEADERBOARD_OAUTH_CLIENT_ID is not set."""
    if settings.oauth_client_id is None or settings.oauth_client_secret is None:
        return None
    from huggingface_hub import constants  # HF_ENDPOINT, as the rest of the backend reads it

    return HubOAuth(
        settings.oauth_endpoint or constants.ENDPOINT,
        settings.oauth_client_id,
        settings.oauth_client_secret.get_secret_value(),
        settings.oauth_scopes,
    )


def callback_url(request: Request) -> str:
    """This server's callback, as the browser reaches it (https behind a TLS proxy): the redirect URL
    registered with the Hub's OAuth app, which the Hub checks."""
    scheme = "https" if is_https(request) else request.url.scheme
    return f"{scheme}://{request.url.netloc}/oauth/callback"


def build(hub: HubOAuth | None) -> APIRouter:
    """The OAuth routes for ``hub`` (None: OAuth is not set up, and they say so)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/oauth/login", response_class=HTMLResponse)
    def login(request: Request, ctx: Ctx) -> Response:
        if hub is None:
            return problem(request, ctx, 404, NOT_SET_UP, "/signin")
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        response = RedirectResponse(hub.authorize_url(callback_url(request), state, challenge), 302)
        response.set_cookie(
            STATE_COOKIE,
            f"{state}.{verifier}",
            max_age=STATE_SECONDS,
            httponly=True,
            samesite="lax",
            secure=is_https(request),
            path="/oauth",
        )
        return response

    @router.get("/oauth/callback", response_class=HTMLResponse)
    def callback(request: Request, ctx: Ctx) -> Response:
        if hub is None:
            return problem(request, ctx, 404, NOT_SET_UP, "/signin")
        response: Response
        try:
            user = _signed_in_user(hub, request)
        except LeaderboardError as exc:
            log.warning("hub sign-in failed", extra={"code": exc.code, "reason": exc.message})
            response = problem(request, ctx, exc.http_status, exc.message, "/signin")
        else:
            identity = Identity(user, user in ctx.auth.admins, "hub")
            log.info("hub sign-in", extra={"user": user, "admin": identity.is_admin})
            store = sessions(request)
            response = RedirectResponse("/queue", status_code=303)
            store.write(response, request, store.new(identity, ""))  # no token: the Hub's is dropped
        response.delete_cookie(
            STATE_COOKIE, path="/oauth", secure=is_https(request), httponly=True, samesite="lax"
        )
        return response

    return router


def _signed_in_user(hub: HubOAuth, request: Request) -> str:
    """The Hub user the callback's code names, once its state is this browser's; the errors say why not."""
    params = request.query_params
    if "error" in params:
        error = params["error"]
        if error == "access_denied":
            raise OAuthRefused("you did not allow this leaderboard to sign you in on the Hub: sign in again")
        reason = oauth_error(error, params.get("error_description"))
        if error in ("server_error", "temporarily_unavailable"):
            raise OAuthUnavailable(f"the Hub could not sign you in now ({reason}): try again later")
        raise OAuthRefused(f"the Hub refused the sign-in ({reason}): sign in again, or with an API token")
    cookie = request.cookies.get(STATE_COOKIE, "")
    state, _, verifier = cookie.partition(".")
    sent = params.get("state", "")
    if (
        not state
        or not verifier
        or len(cookie) > MAX_STATE_COOKIE_CHARS
        or len(sent) > MAX_STATE_COOKIE_CHARS
    ):
        raise OAuthRefused(EXPIRED)
    if not hmac.compare_digest(state.encode(), sent.encode()):
        raise OAuthRefused(EXPIRED)
    code = params.get("code", "")
    if not code or len(code) > MAX_CODE_CHARS or not code.isascii() or not code.isprintable():
        raise OAuthRefused("the Hub sent back no valid sign-in code: sign in again")
    return hub.user(code, verifier, callback_url(request))
