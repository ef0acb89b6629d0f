"""The plots page (``/plots``): the leaderboard table's rows drawn on the server, three SVG images.

Each image is its own GET endpoint (``/plots/<name>.svg``), sent with the pages' security headers; the page
and its images take the table's filters (type, precision, size, search), read as the leaderboard page reads
them, so a plot of a view can be shared. Drawing is slow, so each SVG is kept by a fingerprint of the
numbers it was drawn from: a repeated view, or another view of the same models, is not drawn again, and a
browser holding that fingerprint (its ETag) gets a 304.
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from backend.api.deps import Ctx
from backend.domain import ModelType, Precision
from backend.errors import InvalidInput
from backend.publish.table import TYPE_LABELS
from backend.web.charts import CHARTS, PlotData, Renders, correlation_text
from backend.web.pages import TableView, read_view
from backend.web.view import PAGE_HEADERS, page, problem


def build() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    renders = Renders()

    def view_data(request: Request, ctx: Ctx) -> tuple[TableView, PlotData]:
        board = ctx.leaderboard
        view = read_view(request.query_params, board.columns, board.config.average.column)
        _, rows = board.query(view.query(), limit=sys.maxsize, offset=0)
        return view, PlotData.from_rows(rows, board.config)

    @router.get("/plots", response_class=HTMLResponse)
    def plots(request: Request, ctx: Ctx) -> HTMLResponse:
        try:
            view, data = view_data(request, ctx)
        except InvalidInput as exc:
            return problem(request, ctx, 400, exc.message, "/plots")
        query = view.filters_query()
        return page(
            request,
            ctx,
            "plots.html",
            view=view,
            data=data,
            charts={name: (f"/plots/{name}.svg{query}", chart.alt(data)) for name, chart in CHARTS.items()},
            correlation=_cells(data),
            table_link="/" + query,
            model_types=[(m.value, TYPE_LABELS[m][1]) for m in ModelType],
            precisions=[p.value for p in Precision],
        )

    @router.get("/plots/{name}.svg")
    def image(name: str, request: Request, ctx: Ctx) -> Response:
        chart = CHARTS.get(name)
        if chart is None:
            return problem(request, ctx, 404, "no plot of this name", "/plots")
        try:
            _, data = view_data(request, ctx)
        except InvalidInput as exc:
            return problem(request, ctx, 400, exc.message, "/plots")
        fingerprint, svg = renders.svg(chart, data)
        etag = f'"{fingerprint}"'
        headers = {**PAGE_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(svg, media_type="image/svg+xml", headers=headers)

    return router


def _cells(data: PlotData) -> list[tuple[str, list[tuple[str, Any]]]] | None:
    """The correlation matrix as the page's table: (benchmark, [(text, r)...]) per line."""
    r = data.correlation()
    if r is None:
        return None
    return [
        (name, [(correlation_text(x), x) for x in line])
        for name, line in zip(data.benchmarks, r, strict=True)
    ]
