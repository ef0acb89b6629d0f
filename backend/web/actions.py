"""What a signed-in person does to a request from the pages: vote and withdraw a vote (anyone signed in,
within the API's per-user vote limit), and cancel, requeue, flag or block (admins). Every action is a POST
with the session's CSRF token, goes through the same services as the API, and answers with the page it
came from, or a page saying what was refused and why."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from backend.api.deps import Context, Ctx
from backend.api.schemas import BlockIn, FlagIn, ReasonIn
from backend.domain import EvalRequest
from backend.errors import Forbidden, InvalidInput, LeaderboardError
from backend.web.pages import request_named
from backend.web.session import Session, csrf_matches
from backend.web.view import CSRF_PROBLEM, problem, read_form, signed_in

VOTER_ACTIONS = ("vote", "unvote")
ADMIN_ACTIONS = ("cancel", "requeue", "flag", "block")


def _reason(form: dict[str, str], required: bool) -> str | None:
    reason = form.get("reason", "").strip() or None
    if required and reason is None:
        raise InvalidInput("give a reason: it is recorded and shown with the flag or block")
    return reason


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "the form"
    return f"{field}: {error['msg']}"


def _act(ctx: Context, session: Session, target: EvalRequest, action: str, form: dict[str, str]) -> None:
    """Do ``action`` on ``target`` as ``session``'s user (a LeaderboardError when refused)."""
    user = session.user
    if action in VOTER_ACTIONS:
        ctx.limiter.hit(user, "vote")
        if action == "vote":
            ctx.app.votes.vote(target.id, user)
        else:
            ctx.app.votes.unvote(target.id, user)
        return
    if not session.is_admin:
        raise Forbidden(f"only admins may {action} a request: sign in with an admin token")
    admin = ctx.app.admin
    try:
        if action == "cancel":
            admin.cancel(target.id, user, ReasonIn(reason=_reason(form, False)).reason)
        elif action == "requeue":
            admin.requeue(target.id, user, ReasonIn(reason=_reason(form, False)).reason)
        elif action == "flag":
            body = FlagIn(model=target.model, reason=_reason(form, True) or "")
            admin.flag(body.model, user, body.reason)
        else:
            scope = form.get("scope", "model")
            if scope not in ("model", "namespace"):
                raise InvalidInput("scope must be model or namespace")
            key = target.model if scope == "model" else target.model.split("/", 1)[0] + "/*"
            blocked = BlockIn(model=key, reason=_reason(form, True) or "")
            admin.block(blocked.model, user, blocked.reason)
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from exc


def build() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/requests/{request_id}/{action}", response_class=HTMLResponse)
    async def act(request_id: str, action: str, request: Request, ctx: Ctx) -> Response:
        form = await read_form(request)
        work: Callable[[], Response] = lambda: _answer(request, ctx, request_id, action, form)  # noqa: E731
        return await run_in_threadpool(work)

    return router


def _answer(request: Request, ctx: Context, request_id: str, action: str, form: dict[str, str]) -> Response:
    """The page after ``action``: where the form came from (the queue, or the request's page for admin
    actions and forms that say so), or a page saying what was refused."""
    session = signed_in(request, ctx)
    target = request_named(ctx, request_id)
    if action not in (*VOTER_ACTIONS, *ADMIN_ACTIONS) or target is None:
        return problem(request, ctx, 404, "no such request or action", "/queue")
    on_request_page = action in ADMIN_ACTIONS or form.get("back") == "request"
    back = f"/requests/{target.id}" if on_request_page else "/queue"
    if session is None:
        return problem(request, ctx, 401, f"sign in to {action}", "/signin")
    if not csrf_matches(session, form.get("csrf")):
        return problem(request, ctx, 403, CSRF_PROBLEM, back)
    try:
        _act(ctx, session, target, action, form)
    except LeaderboardError as exc:
        return problem(request, ctx, exc.http_status, exc.message, back)
    return RedirectResponse(back, status_code=303)
