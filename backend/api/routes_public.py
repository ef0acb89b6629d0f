"""Reads anyone may make: the queue, a request, the leaderboard, the published results, health, metrics."""

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request

from backend.api.deps import OPTIONAL_AUTH, Ctx, MaybeUser, known_query_only
from backend.api.responses import READ, errors
from backend.api.schemas import (
    Health,
    LeaderboardOut,
    LeaderboardPage,
    LogView,
    QueuePage,
    RequestDetailOut,
    RequestOut,
)
from backend.domain import ModelType, Precision, Status
from backend.errors import DatabaseUnavailable, LeaderboardNotFound
from backend.judged.config import JudgedConfig
from backend.services.leaderboard import LeaderboardService, query_of
from backend.services.leaderboard import Query as TableQuery

MAX_ID = 2**31 - 1
RequestId = Annotated[int, Path(ge=1, le=MAX_ID, description="The request id.")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Rows to skip.")]

SAFE_FILE_NAME = re.compile(r"[\w.+-]{1,200}")
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv", "json": "application/json"}


class TableFilters:
    """The table filters every leaderboard route takes."""

    def __init__(
        self,
        model_type: Annotated[ModelType | None, Query(alias="type")] = None,
        precision: Precision | None = None,
        min_params: Annotated[
            float | None, Query(ge=0, le=1e6, description="Billions of parameters.")
        ] = None,
        max_params: Annotated[
            float | None, Query(ge=0, le=1e6, description="Billions of parameters.")
        ] = None,
        search: Annotated[str | None, Query(max_length=200, description="Part of the model id.")] = None,
        chat_template: Annotated[
            bool | None, Query(description="Only models evaluated with (true) or without (false) one.")
        ] = None,
        official: Annotated[bool, Query(description="Only models of official providers.")] = False,
        hide_flagged: bool = False,
        hide_merged: bool = False,
    ) -> None:
        self.model_type, self.precision = model_type, precision
        self.min_params, self.max_params, self.search = min_params, max_params, search
        self.chat_template, self.official = chat_template, official
        self.hide_flagged, self.hide_merged = hide_flagged, hide_merged

    def query(self, sort: str, order: str) -> TableQuery:
        return query_of(self, sort, order == "desc")


def _page(board: LeaderboardService[Any], query: TableQuery, limit: int, offset: int) -> LeaderboardPage:
    total, rows = board.query(query, limit, offset)
    return LeaderboardPage(
        leaderboard=board.config.name,
        columns=board.columns,
        total=total,
        offset=offset,
        limit=limit,
        rows=rows,
    )


def build(max_page_size: int, columns: list[str]) -> APIRouter:
    """The routes, with the page-size limit and the table's columns (what `sort` accepts) in the spec."""
    router = APIRouter(dependencies=[Depends(known_query_only)])
    Limit = Annotated[int, Query(ge=1, le=max_page_size, description="Rows per page.")]
    Column = Literal[tuple(columns)]  # type: ignore[valid-type]

    @router.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["service"])
    def healthz(ctx: Ctx) -> Response | Health:
        """Whether the API can reach its database."""
        try:
            ctx.app.db.ping()
        except DatabaseUnavailable:
            return JSONResponse(Health(status="unavailable", database="unreachable").model_dump(), 503)
        return Health(status="ok", database="ok")

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        tags=["service"],
    )
    def metrics(request: Request) -> Response:
        """Prometheus metrics: queue depth by status, running jobs, evaluation durations, API requests and
        errors."""
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/api/queue", response_model=QueuePage, responses=READ, tags=["queue"])
    def queue(ctx: Ctx, offset: Offset = 0, limit: Limit = 50, status: Status = Status.PENDING) -> QueuePage:
        """Requests in one status: pending ones in queue order (votes, then submission time), others newest
        first."""
        items, more = ctx.app.queue.page_and_more(status, limit, offset)
        return QueuePage(
            status=status,
            offset=offset,
            limit=limit,
            items=[RequestOut.of(r) for r in items],
            next_offset=offset + limit if more else None,
        )

    @router.get(
        "/api/requests/{request_id}",
        response_model=RequestDetailOut,
        responses={**READ, **errors(401, 404)},
        openapi_extra=OPTIONAL_AUTH,
        tags=["queue"],
    )
    def request_detail(request_id: RequestId, ctx: Ctx, caller: MaybeUser) -> RequestDetailOut:
        """A request's status, history and voters. A failed run's reason is shown to everyone; the end of
        its log to the request's submitter and admins; where the log is on the server to admins only."""
        detail = ctx.app.queue.detail(request_id)
        user, is_admin = (caller.user, caller.is_admin) if caller is not None else (None, False)
        return RequestDetailOut.of(detail, LogView.of(user, is_admin, detail.request.sender))

    @router.get("/api/leaderboard", response_model=LeaderboardPage, responses=READ, tags=["results"])
    def leaderboard(
        ctx: Ctx,
        filters: Annotated[TableFilters, Depends()],
        offset: Offset = 0,
        limit: Limit = 50,
        sort: Annotated[Column, Query(description="A column of the table.")] = columns[9],  # type: ignore[valid-type]
        order: Literal["desc", "asc"] = "desc",
    ) -> LeaderboardPage:
        """The leaderboard: one row per (model, sha, precision) with its latest scores, in the published
        table's columns; sorted, filtered by type, precision, size, chat template, official providers,
        flags and merges, searched by model id."""
        return _page(ctx.leaderboard, filters.query(sort, order), limit, offset)

    @router.get("/api/leaderboards", response_model=list[LeaderboardOut], responses=READ, tags=["results"])
    def leaderboards(ctx: Ctx) -> list[LeaderboardOut]:
        """Every leaderboard this deployment serves: the benchmark one first, then the judged ones (a
        judge compares each model's answers with a reference's), each with its table's columns."""
        return [
            LeaderboardOut(
                name=name,
                title=board.config.title,
                kind="judged" if isinstance(board.config, JudgedConfig) else "benchmark",
                columns=board.columns,
                sort=board.default_sort,
                table=f"/api/leaderboards/{name}",
            )
            for name, board in ctx.app.leaderboards.items()
        ]

    @router.get(
        "/api/leaderboards/{name}",
        response_model=LeaderboardPage,
        responses=errors(404, 422),
        tags=["results"],
    )
    def leaderboard_by_name(
        ctx: Ctx,
        name: Annotated[
            str, Path(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=100, description="A leaderboard.")
        ],
        filters: Annotated[TableFilters, Depends()],
        offset: Offset = 0,
        limit: Limit = 50,
        sort: Annotated[
            str | None,
            Query(max_length=200, description="A column of the table (default: its ranking column)."),
        ] = None,
        order: Literal["desc", "asc"] = "desc",
    ) -> LeaderboardPage:
        """One leaderboard's table (GET /api/leaderboards lists them), with the filters of /api/leaderboard."""
        board = ctx.app.leaderboards.get(name)
        if board is None:
            raise LeaderboardNotFound(
                f"no leaderboard named '{name}' here: the deployment serves {', '.join(ctx.app.leaderboards)}"
            )
        return _page(board, filters.query(sort or board.default_sort, order), limit, offset)

    @router.get(
        "/api/results",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "text/csv": {"schema": {"type": "string"}},
                    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                },
                "description": "The published leaderboard table.",
            },
            **READ,
            **errors(404),
        },
        tags=["results"],
    )
    def results(
        ctx: Ctx,
        fmt: Annotated[Literal["parquet", "csv", "json"], Query(alias="format")] = "json",
        leaderboard: Annotated[
            str | None,
            Query(
                pattern=r"^[a-z0-9][a-z0-9_]*$",
                max_length=100,
                description="A leaderboard (default: the benchmark one).",
            ),
        ] = None,
    ) -> Response:
        """A published leaderboard table (from LEADERBOARD_RESULTS) as JSON, CSV or parquet."""
        data = ctx.app.publishing.download(ctx.app.results_target(), fmt, leaderboard)
        return Response(data, media_type=MEDIA_TYPES[fmt])

    @router.get(
        "/api/results/files/{path:path}",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                },
                "description": "A published results file or per-sample details file.",
            },
            **READ,
            **errors(404, 502),
        },
        tags=["results"],
    )
    def published_file(
        ctx: Ctx,
        path: Annotated[
            str,
            Path(
                pattern=r"^(results/.+\.json|details/.+\.parquet)$",
                max_length=1000,
                description="The file's path in the results dataset.",
            ),
        ],
    ) -> Response:
        """One file of the published results dataset: a model's results file
        (results/ORG/NAME/results_TIME.json) or one task's per-sample details
        (details/ORG__NAME/TASK/PRECISION_TIME.parquet), as the result pages link them."""
        data = ctx.app.publishing.published_file(ctx.app.results_target(), path)
        kind = "json" if path.endswith(".json") else "parquet"
        name = path.rsplit("/", 1)[-1]
        disposition = f'attachment; filename="{name}"' if SAFE_FILE_NAME.fullmatch(name) else "attachment"
        return Response(
            data,
            media_type=MEDIA_TYPES[kind],
            headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
        )

    return router
