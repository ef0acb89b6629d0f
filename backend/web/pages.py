"""The pages people read, rendered on the server with Jinja2: the leaderboard (``/``), a result
(``/results/{id}``), a request (``/requests/{id}``), the queue (``/queue``) and the sign-in form. (Forms that
change something are in actions.py and submit.py, the plots in plots.py, Hub sign-in in oauth.py.)

Jinja2 escapes every value (autoescape on): a model name or a failure reason is text, never markup. The view
of the table lives in the URL (sort, order, filters, columns, search, page), so a view can be shared. A query value
that is not valid is shown on the page with what is accepted (HTTP 400), never a server error.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from backend.api.deps import Ctx
from backend.api.schemas import LogView, visible_tail
from backend.domain import EvalRequest, ModelType, Precision, Status
from backend.errors import InvalidInput, LeaderboardError, RequestNotFound
from backend.judged.config import JudgedConfig
from backend.leaderboards.config import AnyConfig, LeaderboardConfig
from backend.leaderboards.config import columns as config_columns
from backend.publish import files as layout
from backend.publish.judged_table import INT_COLUMNS, MODEL_COLUMNS, NAME, PROVENANCE_COLUMNS, STDERRS
from backend.publish.table import (
    BOOL_COLUMNS,
    OUR_COLUMNS,
    REFERENCE_COLUMNS,
    TYPE_LABELS,
    co2_cost_kg,
    stderr_column,
    table_columns,
)
from backend.services.leaderboard import LeaderboardService, Query, query_of
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
    chat_template: bool | None = None
    official: bool = False
    hide_flagged: bool = False
    hide_merged: bool = False
    columns: tuple[str, ...] = ()  # chosen in the column picker; empty: the default columns
    path: str = "/"  # the page: "/" (the benchmark leaderboard) or /leaderboards/<name>

    def query(self) -> Query:
        return query_of(self, self.sort, self.descending)

    @property
    def filtered(self) -> bool:
        return self.query() != Query(self.sort, self.descending)

    def params(self, **changes: Any) -> dict[str, Any]:
        """This view's URL parameters with ``changes`` (None removes one; the defaults are left out)."""
        values: dict[str, Any] = {
            "sort": self.sort,
            "order": "desc" if self.descending else "asc",
            "type": self.model_type.value if self.model_type else None,
            "precision": self.precision.value if self.precision else None,
            "min_params": self.min_params,
            "max_params": self.max_params,
            "search": self.search,
            "chat_template": None if self.chat_template is None else YES_NO[self.chat_template],
            "official": 1 if self.official else None,
            "hide_flagged": 1 if self.hide_flagged else None,
            "hide_merged": 1 if self.hide_merged else None,
            "col": list(self.columns) or None,
            "page": self.page if self.page > 1 else None,
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v is not None}

    def url(self, **changes: Any) -> str:
        """This view's URL with ``changes`` (None removes a parameter; the defaults are left out)."""
        return self.path + "?" + urlencode(self.params(**changes), doseq=True)

    def unfiltered_url(self, path: str) -> str:
        """``path`` with this view's sort and columns but none of its filters."""
        kept = {k: v for k, v in self.params(page=None).items() if k not in FILTERS}
        return path + ("?" + urlencode(kept, doseq=True) if kept else "")

    def filters_query(self) -> str:
        """Only the filters of this view, as a query string ("" for none): what selects the rows."""
        shown = {k: v for k, v in self.params().items() if k in FILTERS}
        return "?" + urlencode(shown) if shown else ""


YES_NO = {True: "yes", False: "no"}
#: The URL parameters that select rows (the others sort, choose columns and page).
FILTERS = frozenset(
    {"type", "precision", "min_params", "max_params", "search", "chat_template", "official"}
    | {"hide_flagged", "hide_merged"}
)


def _number(params: Mapping[str, str], name: str) -> float | None:
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


def _choice(params: Mapping[str, str], name: str, enum_type: Any) -> Any:
    value = params.get(name, "").strip()
    if not value:
        return None
    for member in enum_type:
        if value == member.value:
            return member
    raise InvalidInput(f"{name} must be one of: {', '.join(m.value for m in enum_type)}")


def _switch(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "")
    if value not in ("", "1"):
        raise InvalidInput(f"{name} must be 1 (on) or left out (off)")
    return value == "1"


def read_view(
    params: Mapping[str, str],
    columns: list[str],
    default_sort: str,
    chosen: Sequence[str] = (),
    path: str = "/",
) -> TableView:
    """The view in the URL's parameters (``chosen``: the repeated ``col`` parameter); InvalidInput names
    the first that is not valid and what is."""
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
    chat = params.get("chat_template", "")
    if chat not in ("", "yes", "no"):
        raise InvalidInput("chat_template must be yes, no or left out (either)")
    if len(chosen) > len(columns) or any(c not in columns or c == MODEL_COLUMN for c in chosen):
        raise InvalidInput("col must name columns of the table (the column picker lists them)")
    return TableView(
        sort=sort,
        descending=order == "desc",
        model_type=_choice(params, "type", ModelType),
        precision=_choice(params, "precision", Precision),
        min_params=_number(params, "min_params"),
        max_params=_number(params, "max_params"),
        search=search,
        page=int(page_text),
        chat_template={"": None, "yes": True, "no": False}[chat],
        official=_switch(params, "official"),
        hide_flagged=_switch(params, "hide_flagged"),
        hide_merged=_switch(params, "hide_merged"),
        columns=tuple(dict.fromkeys(chosen)),
        path=path,
    )


MODEL_COLUMN = "fullname"  # always shown, first, as a link to the model's page


@dataclass(frozen=True)
class Column:
    """A column of the leaderboard page: its name in the table, and how its cells are shown."""

    name: str
    kind: str  # "score" (± its standard error), "number", "params", "bool", "type" or "text"
    stderr: str | None = None


def page_columns(config: AnyConfig) -> dict[str, Column]:
    """Every column the picker offers, in the table's order, each with how it is shown."""
    judged = isinstance(config, JudgedConfig)
    scores = set(config.columns if isinstance(config, JudgedConfig) else config_columns(config))
    out: dict[str, Column] = {}
    for name in table_columns(config):
        if name == MODEL_COLUMN or (judged and name == NAME):
            continue
        if name in scores and (not judged or name not in INT_COLUMNS):
            out[name] = Column(name, "score", stderr_column(config, name) or None)
        elif name == "#Params (B)":
            out[name] = Column(name, "params")
        elif name == "Type":
            out[name] = Column(name, "type")
        elif name in BOOL_COLUMNS:
            out[name] = Column(name, "bool")
        elif name.endswith(" stderr") or name in ("CO₂ cost (kg)", "Hub ❤️", "Generation", "Limit"):
            out[name] = Column(name, "number")
        else:
            out[name] = Column(name, "text")
    return out


def default_columns(config: AnyConfig) -> list[str]:
    """Shown until the picker chooses: the average, the benchmarks, type, size, precision, chat template
    (a judged leaderboard: its metrics but their standard errors, shown beside them)."""
    if isinstance(config, JudgedConfig):
        errors = set(STDERRS.values())
        return [*(c for c in config.columns if c not in errors), "Type", "#Params (B)", "Precision"]
    return [
        config.average.column,
        *(b.column for b in config.benchmarks),
        "Type",
        "#Params (B)",
        "Precision",
        "Chat Template",
    ]


def picker_groups(config: AnyConfig) -> list[tuple[str, list[str]]]:
    """The column picker's sections: the reference's 36 columns, standard errors, and ours (a judged
    leaderboard: AlpacaEval's metrics, the model, the judgement's provenance)."""
    names = list(page_columns(config))
    if isinstance(config, JudgedConfig):
        return [
            ("AlpacaEval's metrics", [n for n in names if n in config.columns]),
            ("The model", [n for n in names if n in MODEL_COLUMNS]),
            ("Ours (provenance)", [n for n in names if n in PROVENANCE_COLUMNS]),
        ]
    ours = set(OUR_COLUMNS)
    return [
        ("The reference's columns", [n for n in names if n in REFERENCE_COLUMNS]),
        ("Standard errors", [n for n in names if n.endswith(" stderr")]),
        ("Ours (provenance)", [n for n in names if n in ours]),
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


@dataclass(frozen=True)
class VersionView:
    """One result version on the result page: what made it, what it changed, and its published files."""

    evaluation: Evaluation
    rescore: dict[str, Any] | None  # the re-score that made it (None: the run's own scores)
    changes: list[tuple[str, float | None, float | None]]  # (column, before, after) of the scores it changed
    results_file: str  # paths in the results dataset
    details_files: list[tuple[str, str]]  # (task, path) first published with this version


def version_history(
    config: LeaderboardConfig, request: EvalRequest, versions: list[Evaluation]
) -> list[VersionView]:
    out = []
    for before, evaluation in zip([None, *versions], versions, strict=False):
        rescores = evaluation.provenance.get("rescores")
        record = rescores[-1] if before is not None and isinstance(rescores, list) and rescores else None
        changes = []
        if before is not None:
            for column in config_columns(config):
                old, new = _finite(before.scores.get(column)), _finite(evaluation.scores.get(column))
                if old != new:
                    changes.append((column, old, new))
        tasks = sorted({layout.task_of(f) for f in layout.new_samples_files(evaluation)})
        out.append(
            VersionView(
                evaluation,
                {k: strip_server_paths(_text(v)) for k, v in record.items() if k != "samples_files"}
                if isinstance(record, dict)
                else None,
                changes,
                layout.results_path(request, evaluation),
                [(task, layout.details_path(request, evaluation, task)) for task in tasks],
            )
        )
    return out


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
        ("CO₂ cost (kg, the reference's formula)", _co2(p.get("total_evaluation_time_seconds"))),
    ]
    return [(label, strip_server_paths(_text(value))) for label, value in shown if value is not None]


def _co2(seconds: Any) -> str | None:
    cost = co2_cost_kg(seconds)
    return None if cost < 0 else f"{cost:.4f}"


def _pairs(value: Any) -> list[tuple[str, str]]:
    return sorted((str(k), str(v)) for k, v in value.items()) if isinstance(value, dict) else []


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def board_page(request: Request, ctx: Ctx, board: LeaderboardService[Any], path: str) -> HTMLResponse:
    """A leaderboard's table page: the benchmark one at /, a judged one at /leaderboards/<name>."""
    config = board.config
    params = request.query_params
    try:
        view = read_view(params, board.columns, board.default_sort, params.getlist("col"), path)
    except InvalidInput as exc:
        return problem(request, ctx, 400, exc.message, path)
    table = board.page(view.query(), PAGE_ROWS, (view.page - 1) * PAGE_ROWS)
    available = page_columns(config)
    shown = [available[name] for name in (view.columns or default_columns(config))]
    judged = isinstance(config, JudgedConfig)
    return page(
        request,
        ctx,
        "leaderboard.html",
        view=view,
        board_title=config.title,
        judged=config if judged else None,
        boards=[
            (name, b.config.title, "/" if b is ctx.leaderboard else f"/leaderboards/{name}")
            for name, b in ctx.app.leaderboards.items()
        ],
        download="" if board is ctx.leaderboard else f"&leaderboard={config.name}",
        result_path="/requests/" if judged else "/results/",
        table=table,
        rows=zip(table.rows, table.ranks, strict=True),
        pages=max(1, math.ceil(table.total / PAGE_ROWS)),
        columns=shown,
        picker=picker_groups(config),
        shown_names={c.name for c in shown},
        ranked_by_error=bool(stderr_column(config, view.sort))
        and stderr_column(config, view.sort) in board.columns,
        model_types=[(m.value, TYPE_LABELS[m][1]) for m in ModelType],
        precisions=[p.value for p in Precision],
    )


def build() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def leaderboard(request: Request, ctx: Ctx) -> HTMLResponse:
        return board_page(request, ctx, ctx.leaderboard, "/")

    @router.get("/leaderboards/{name}", response_class=HTMLResponse)
    def leaderboard_by_name(name: str, request: Request, ctx: Ctx) -> HTMLResponse:
        board = ctx.app.leaderboards.get(name)
        if board is None:
            return problem(request, ctx, 404, "no leaderboard of this name is served here", "/")
        if board is ctx.leaderboard:
            return board_page(request, ctx, board, "/")
        return board_page(request, ctx, board, f"/leaderboards/{name}")

    @router.get("/results/{request_id}", response_class=HTMLResponse)
    def result(request_id: str, request: Request, ctx: Ctx) -> HTMLResponse:
        config = ctx.leaderboard.config
        asked = request_named(ctx, request_id)
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
            versions=version_history(config, asked, versions),
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
        asked = request_named(ctx, request_id)
        if asked is None:
            return problem(request, ctx, 404, "no request with this number", "/queue")
        detail = ctx.app.queue.detail(asked.id)
        evaluated = bool(ctx.app.evaluations.versions(asked.id, config.name))
        session = signed_in(request, ctx)
        user, is_admin = (session.user, session.is_admin) if session is not None else (None, False)
        view = LogView.of(user, is_admin, asked.sender)
        moderation = ctx.app.moderation
        return page(
            request,
            ctx,
            "request.html",
            session=session,
            detail=detail,
            evaluated=evaluated,
            log_tail=visible_tail(asked.failure_log_tail, view),
            voted=session is not None and session.user in detail.voters,
            flagged=moderation.flags.find([asked.model]),
            blocked=moderation.blocked_entry(asked.model),
        )

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
            ctx.limiter.hit(request.client.host if request.client else "unknown", "signin")
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

    return router


def request_named(ctx: Ctx, request_id: str) -> EvalRequest | None:
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
    response = page(
        request,
        ctx,
        "signin.html",
        status,
        problem=message,
        csrf=nonce,
        session=None,
        oauth=ctx.app.settings.oauth_configured,
    )
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
