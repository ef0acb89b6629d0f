"""The pages: the leaderboard (``/``) and the queue (``/queue``), rendered on the server with Jinja2.

Jinja2 escapes every value (autoescape on): a model name or a failure reason is text, never markup. The view
of the table lives in the URL (sort, order, filters, search, page), so a view can be shared. A query value
that is not valid is shown on the page with what is accepted (HTTP 400), never a server error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from backend.api.deps import Ctx
from backend.domain import ModelType, Precision, Status
from backend.errors import InvalidInput
from backend.leaderboards.config import LeaderboardConfig
from backend.publish.table import TYPE_LABELS
from backend.services.leaderboard import Query

PAGE_ROWS = 50
MAX_SEARCH_CHARS = 200
#: Security headers of every page: no script, style or image from anywhere but this server, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
QUEUE_STATUSES = (Status.PENDING, Status.RUNNING, Status.FINISHED, Status.FAILED)

templates = Environment(
    loader=PackageLoader("backend.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


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


def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(
        templates.get_template(name).render(**values), status_code=status, headers=PAGE_HEADERS
    )


def build() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def leaderboard(request: Request, ctx: Ctx) -> HTMLResponse:
        board = ctx.leaderboard
        config = board.config
        try:
            view = read_view(dict(request.query_params), board.columns, config.average.column)
        except InvalidInput as exc:
            return render("error.html", 400, title=config.title, problem=exc.message, back="/")
        total, rows = board.query(view.query(), PAGE_ROWS, (view.page - 1) * PAGE_ROWS)
        pages = max(1, math.ceil(total / PAGE_ROWS))
        return render(
            "leaderboard.html",
            title=config.title,
            view=view,
            rows=rows,
            total=total,
            first_rank=(view.page - 1) * PAGE_ROWS + 1,
            pages=pages,
            scores=shown_columns(config),
            model_types=[(m.value, TYPE_LABELS[m][1]) for m in ModelType],
            precisions=[p.value for p in Precision],
        )

    @router.get("/queue", response_class=HTMLResponse)
    def queue(ctx: Ctx) -> HTMLResponse:
        sections = [(status, ctx.app.queue.page_and_more(status, PAGE_ROWS, 0)) for status in QUEUE_STATUSES]
        return render("queue.html", title=ctx.leaderboard.config.title, sections=sections)

    return router
