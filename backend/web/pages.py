"""The pages: the leaderboard (``/``) and the queue (``/queue``), rendered on the server with Jinja2.

Jinja2 escapes every value (autoescape on): a model name or a failure reason is text, never markup. The view
of the table lives in the URL (sort, order, filters, search, page), so a view can be shared. A query value
that is not valid is shown on the page with what is accepted (HTTP 400), never a server error.
"""

from __future__ import annotations

import hmac
import math
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from backend.api.deps import Ctx
from backend.domain import EvalRequest, ModelType, Precision, Status
from backend.errors import InvalidInput, LeaderboardError, RequestNotFound
from backend.leaderboards.config import LeaderboardConfig
from backend.publish.table import TYPE_LABELS
from backend.services.leaderboard import Query
from backend.services.redact import strip_server_paths
from backend.storage.evaluations import Evaluation
from backend.storage.tokens import token_hash
from backend.web.session import Sessions, csrf_matches, is_https
from backend.web.view import CSRF_PROBLEM, page, problem, read_form, sessions, signed_in

PAGE_ROWS = 50
MAX_REQUEST_ID = 2**31 - 1
MAX_SEARCH_CHARS = 200
QUEUE_STATUSES = (Status.PENDING, Status.RUNNING, Status.FINISHED, Status.FAILED)


@dataclass(frozen=True)
class TableView:
    """What the leaderboard page shows, read from its URL."""

    sort: str
    descending: bool
    model_type: ModelType | None
    precision: Precision | None
    min_params: float | None
    max_params: float | None
    search: str | None
    page: int

    def query(self) -> Query:
        return Query(
            self.sort,
            self.descending,
            self.model_type,
            self.precision,
            self.min_params,
            self.max_params,
            self.search,
        )

    def url(self, **changes: Any) -> str:
        """This view's URL with ``changes`` (None removes a parameter; the defaults are left out)."""
        values = {
            "sort": self.sort,
            "order": "desc" if self.descending else "asc",
            "type": self.model_type.value if self.model_type else None,
            "precision": self.precision.value if self.precision else None,
            "min_params": self.min_params,
            "max_params": self.max_params,
            "search": self.search,
            "page": self.page if self.page > 1 else None,
        }
        values.update(changes)
        return "/?" + urlencode({k: v for k, v in values.items() if v is not None})


def _number(params: dict[str, str], name: str) -> float | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number <= 1e6:
        raise InvalidInput(f"{name} must be a number of billions of parameters from 0 to 1000000")
    return number


def _choice(params: dict[str, str], name: str, enum_type: Any) -> Any:
    value = params.get(name, "").strip()
    if not value:
        return None
    for member in enum_type:
        if value == member.value:
            return member
    raise InvalidInput(f"{name} must be one of: {', '.join(m.value for m in enum_type)}")


def read_view(params: dict[str, str], columns: list[str], default_sort: str) -> TableView:
    """The view in the URL's parameters; InvalidInput names the first that is not valid and what is."""
    sort = params.get("sort") or default_sort
    if sort not in columns:
        raise InvalidInput("sort must be a column of the table")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidInput("order must be asc or desc")
    search = (params.get("search") or "").strip() or None
    if search is not None and len(search) > MAX_SEARCH_CHARS:
        raise InvalidInput(f"search must be at most {MAX_SEARCH_CHARS} characters")
    page_text = params.get("page") or "1"
    if not page_text.isdigit() or not 1 <= int(page_text) <= 10**6:
        raise InvalidInput("page must be a whole number from 1")
    return TableView(
        sort=sort,
        descending=order == "desc",
        model_type=_choice(params, "type", ModelType),
        precision=_choice(params, "precision", Precision),
        min_params=_number(params, "min_params"),
        max_params=_number(params, "max_params"),
        search=search,
        page=int(page_text),
    )


def shown_columns(config: LeaderboardConfig) -> list[tuple[str, str]]:
    """The score columns of the page: (column, its standard-error column), the average first."""
    return [(config.average.column, f"{config.average.column} stderr")] + [
        (b.column, f"{b.column} stderr") for b in config.benchmarks
    ]


@dataclass(frozen=True)
class Bar:
    """One benchmark of the result page's plot: its normalized score and standard error, as SVG geometry."""

    label: str
    value: float | None
    stderr: float | None
    y: int

    @property
    def width(self) -> float:
        return 0.0 if self.value is None else max(0.0, min(100.0, self.value)) * PLOT_SCALE

    @property
    def error(self) -> tuple[float, float] | None:
        if self.value is None or self.stderr is None:
            return None
        low, high = max(0.0, self.value - self.stderr), min(100.0, self.value + self.stderr)
        return PLOT_LEFT + low * PLOT_SCALE, PLOT_LEFT + high * PLOT_SCALE


PLOT_LEFT, PLOT_SCALE, PLOT_ROW = 110, 4.0, 26  # the plot's label width, px per point, row height


def bars(config: LeaderboardConfig, evaluation: Evaluation) -> list[Bar]:
    return [
        Bar(b.display, evaluation.scores.get(b.column), evaluation.stderrs.get(b.stderr_column), i * PLOT_ROW)
        for i, b in enumerate(config.benchmarks)
    ]


def subtask_scores(
    config: LeaderboardConfig, evaluation: Evaluation
) -> list[tuple[str, list[tuple[str, Any, Any]]]]:
    """Per benchmark, its subtasks' raw metrics as the harness reported them: (subtask, value, stderr)."""
    reported = evaluation.results.get("results")
    reported = reported if isinstance(reported, dict) else {}
    out = []
    for b in config.benchmarks:
        rows = []
        for subtask in b.subtasks:
            entry = reported.get(subtask.name)
            entry = entry if isinstance(entry, dict) else {}
            for metric in b.metrics:
                value = entry.get(f"{metric},{b.filter}")
                stderr = entry.get(f"{metric}_stderr,{b.filter}")
                rows.append((f"{subtask.name} ({metric})", _finite(value), _finite(stderr)))
        out.append((b.display, rows))
    return out


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def provenance_view(evaluation: Evaluation) -> list[tuple[str, Any]]:
    """What a reader may see of a result's provenance: versions, hashes, revisions, seeds, hardware and the
    commands, with no path of the server (samples and results files are published in the dataset)."""
    p = evaluation.provenance
    harness: dict[str, Any] = p["harness"] if isinstance(p.get("harness"), dict) else {}
    shown: list[tuple[str, Any]] = [
        ("Harness", f"{harness.get('package', '?')} {harness.get('version', '?')}"),
        ("Transformers", p.get("transformers_version")),
        ("Config hash", evaluation.config_hash),
        ("Task set", p.get("task_set")),
        ("Data source", p.get("data_source")),
        ("Seeds", p.get("seeds")),
        ("Limit", p.get("limit")),
        ("Hardware", p.get("hardware")),
        ("Deviations from the reference", p.get("deviations") or "none"),
        ("Evaluation time (s)", p.get("total_evaluation_time_seconds")),
    ]
    return [(label, strip_server_paths(_text(value))) for label, value in shown if value is not None]


def _pairs(value: Any) -> list[tuple[str, str]]:
    return sorted((str(k), str(v)) for k, v in value.items()) if isinstance(value, dict) else []


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def build() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def leaderboard(request: Request, ctx: Ctx) -> HTMLResponse:
        board = ctx.leaderboard
        config = board.config
        try:
            view = read_view(dict(request.query_params), board.columns, config.average.column)
        except InvalidInput as exc:
            return problem(request, ctx, 400, exc.message, "/")
        total, rows = board.query(view.query(), PAGE_ROWS, (view.page - 1) * PAGE_ROWS)
        pages = max(1, math.ceil(total / PAGE_ROWS))
        return page(
            request,
            ctx,
            "leaderboard.html",
            view=view,
            rows=rows,
            total=total,
            first_rank=(view.page - 1) * PAGE_ROWS + 1,
            pages=pages,
            scores=shown_columns(config),
            model_types=[(m.value, TYPE_LABELS[m][1]) for m in ModelType],
            precisions=[p.value for p in Precision],
        )

    @router.get("/results/{request_id}", response_class=HTMLResponse)
    def result(request_id: str, request: Request, ctx: Ctx) -> HTMLResponse:
        config = ctx.leaderboard.config
        asked = _request(ctx, request_id)
        versions = ctx.app.evaluations.versions(asked.id, config.name) if asked else []
        if asked is None or not versions:
            return problem(request, ctx, 404, "no result with this number", "/")
        latest = versions[-1]
        p = latest.provenance
        return page(
            request,
            ctx,
            "result.html",
            asked=asked,
            evaluation=latest,
            versions=versions,
            bars=bars(config, latest),
            plot=(PLOT_LEFT, PLOT_SCALE, PLOT_ROW),
            benchmarks=config.benchmarks,
            average=config.average.column,
            subtasks=subtask_scores(config, latest),
            provenance=provenance_view(latest),
            task_hashes=_pairs(p.get("task_hashes")),
            dataset_revisions=_pairs(p.get("dataset_revisions")),
            command=strip_server_paths(str(p.get("command") or "")),
            harness_command=strip_server_paths(str(p.get("harness_command") or "")),
        )

    @router.get("/requests/{request_id}", response_class=HTMLResponse)
    def request_page(request_id: str, request: Request, ctx: Ctx) -> HTMLResponse:
        config = ctx.leaderboard.config
        asked = _request(ctx, request_id)
        if asked is None:
            return problem(request, ctx, 404, "no request with this number", "/queue")
        detail = ctx.app.queue.detail(asked.id)
        evaluated = bool(ctx.app.evaluations.versions(asked.id, config.name))
        return page(request, ctx, "request.html", detail=detail, evaluated=evaluated)

    @router.get("/queue", response_class=HTMLResponse)
    def queue(request: Request, ctx: Ctx) -> HTMLResponse:
        session = signed_in(request, ctx)
        sections = [(status, ctx.app.queue.page_and_more(status, PAGE_ROWS, 0)) for status in QUEUE_STATUSES]
        voted: set[int] = set()
        if session is not None:
            voted = ctx.app.vote_repository.voted(session.user, [r.id for r in sections[0][1][0]])
        return page(request, ctx, "queue.html", sections=sections, session=session, voted=voted)

    @router.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request, ctx: Ctx) -> HTMLResponse:
        return _signin_page(ctx, request)

    @router.post("/signin", response_class=HTMLResponse)
    async def signin(request: Request, ctx: Ctx) -> Response:
        form = await read_form(request)
        cookie = request.cookies.get(SIGNIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
            return _signin_page(
                ctx, request, "the sign-in form expired or came from another site: sign in again", 403
            )
        token = form.get("token", "")
        try:
            identity = ctx.auth.authenticate(token)
        except LeaderboardError as exc:
            return _signin_page(ctx, request, exc.message, exc.http_status)
        store = sessions(request)
        response = RedirectResponse("/queue", status_code=303)
        store.write(response, request, store.new(identity, token_hash(token.strip())))
        response.delete_cookie(SIGNIN_COOKIE, path="/signin")
        return response

    @router.post("/signout")
    async def signout(request: Request, ctx: Ctx) -> Response:
        session = signed_in(request, ctx)
        if not csrf_matches(session, (await read_form(request)).get("csrf")):
            return problem(request, ctx, 403, CSRF_PROBLEM, "/queue")
        response = RedirectResponse("/", status_code=303)
        Sessions.clear(response)
        return response

    @router.post("/requests/{request_id}/{action}", response_class=HTMLResponse)
    async def vote(request_id: str, action: str, request: Request, ctx: Ctx) -> Response:
        """Vote or withdraw a vote from the queue page: signed in, with the form's CSRF token, within the
        API's per-user vote limit."""
        session = signed_in(request, ctx)
        form = await read_form(request)
        target = _request(ctx, request_id)
        if action not in ("vote", "unvote") or target is None:
            return problem(request, ctx, 404, "no such request or action", "/queue")
        if session is None:
            return problem(request, ctx, 401, "sign in to vote", "/signin")
        if not csrf_matches(session, form.get("csrf")):
            return problem(request, ctx, 403, CSRF_PROBLEM, "/queue")
        try:
            ctx.limiter.hit(session.user, "vote")
            if action == "vote":
                ctx.app.votes.vote(target.id, session.user)
            else:
                ctx.app.votes.unvote(target.id, session.user)
        except LeaderboardError as exc:
            return problem(request, ctx, exc.http_status, exc.message, "/queue")
        return RedirectResponse("/queue", status_code=303)

    return router


def _request(ctx: Ctx, request_id: str) -> EvalRequest | None:
    """The request a page's URL names, or None (not a number, or no such request)."""
    if not request_id.isdigit() or not 1 <= int(request_id) <= MAX_REQUEST_ID:
        return None
    try:
        return ctx.app.queue.get(int(request_id))
    except RequestNotFound:
        return None


SIGNIN_COOKIE = "lb_signin"


def _signin_page(ctx: Ctx, request: Request, message: str | None = None, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = page(request, ctx, "signin.html", status, problem=message, csrf=nonce, session=None)
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/signin",
    )
    return response
