"""The arena page (``/arena``): the arena's ratings for everyone, and for a signed-in person a battle that
arena.js plays through the JSON routes below it (``/arena/battles/...``).

Those routes are the API's battle operations (backend/api/routes_arena.py: the same service calls, limits
and error shape), with the page's sign-in instead of a bearer token: the session cookie, and for every POST
the session's CSRF token in the ``X-CSRF-Token`` header (a page of another site can neither read the token
nor send that header without this server's consent).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from backend.api.deps import Ctx
from backend.api.routes_arena import battle_routes
from backend.api.schemas_arena import RatingsOut
from backend.errors import Forbidden, Unauthorized
from backend.storage.schema import ARENA_WINNERS
from backend.web.session import csrf_matches
from backend.web.view import CSRF_PROBLEM, page, problem, signed_in

CSRF_HEADER = "X-CSRF-Token"
LABELS = {"model_a": "A is better", "model_b": "B is better", "tie": "Tie", "tie (bothbad)": "Both are bad"}
#: The vote buttons: every winner the battles take (a new one without a label fails here, at import).
WINNERS = tuple((winner, LABELS[winner]) for winner in ARENA_WINNERS)


def page_user(request: Request, ctx: Ctx) -> str:
    """The signed-in user of the page's session; a POST also needs the session's CSRF token in its header."""
    session = signed_in(request, ctx)
    if session is None:
        raise Unauthorized("sign in (on /signin) to battle in the arena")
    if request.method != "GET" and not csrf_matches(session, request.headers.get(CSRF_HEADER)):
        raise Forbidden(CSRF_PROBLEM)
    request.state.user = session.user  # for the access log, as the API's bearer tokens are
    return session.user


def build(max_prompt_chars: int) -> APIRouter:
    """``max_prompt_chars``: the arena's prompt limit (the JSON routes check it as the API's do)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/arena", response_class=HTMLResponse)
    def arena_page(request: Request, ctx: Ctx) -> HTMLResponse:
        arena = ctx.app.arena
        if arena is None:
            return problem(request, ctx, 404, "this leaderboard has no arena", "/")
        ratings = RatingsOut.of(arena, arena.ratings())
        return page(
            request,
            ctx,
            "arena.html",
            arena=arena,
            board_title=arena.config.title,
            modes=arena.modes(),
            ratings=ratings,
            winners=WINNERS,
            refit_seconds=arena.limits.ratings_seconds,
        )

    router.include_router(battle_routes(page_user, False, "/arena/battles", max_prompt_chars))
    return router
