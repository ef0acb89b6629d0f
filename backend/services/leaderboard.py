"""The leaderboard as people browse it: one row per (model, sha, precision), its latest result version, in
the published table's columns; sorted, filtered and searched for the API."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backend.domain import EvalRequest, ModelType, Precision
from backend.errors import InvalidInput
from backend.leaderboards.config import LeaderboardConfig
from backend.publish.table import TYPE_LABELS, Context, build_row, table_columns
from backend.storage.evaluations import Evaluation, EvaluationRepository
from backend.storage.model_metadata import ModelMetadataRepository
from backend.storage.moderation import ModerationRepository
from backend.storage.requests import RequestRepository


def table_context(moderation: ModerationRepository, metadata: ModelMetadataRepository) -> Context:
    """Flagged models, official providers and the refreshed Hub metadata, as the table shows them."""
    return Context(
        flagged=frozenset(e.key for e in moderation.flags.entries()),
        official_providers=frozenset(e.key for e in moderation.official_providers.entries()),
        hub=metadata.all(),
    )


def latest_rows(
    results: Iterable[tuple[Evaluation, EvalRequest]], config: LeaderboardConfig, context: Context
) -> list[dict[str, Any]]:
    """Table rows, one per (model, sha, precision): the last of ``results`` (ordered by request, then
    version) wins; sorted by that key."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for evaluation, request in results:
        key = (request.model, request.sha, request.precision.value)
        latest[key] = build_row(evaluation, request, config, context)
    return [latest[key] for key in sorted(latest)]


@dataclass(frozen=True)
class Query:
    sort: str
    descending: bool = True
    model_type: ModelType | None = None
    precision: Precision | None = None
    min_params_b: float | None = None
    max_params_b: float | None = None
    search: str | None = None
    chat_template: bool | None = None  # only models evaluated with (True) or without (False) a chat template
    official_only: bool = False  # only models of official providers
    hide_flagged: bool = False
    hide_merged: bool = False


@dataclass(frozen=True)
class TablePage:
    """A page of the table: how many rows match, the page's rows, and each row's rank range."""

    total: int
    rows: list[dict[str, Any]]
    ranks: list[tuple[int, int] | None]  # (best, worst) rank within the standard errors; None: no score


class LeaderboardService:
    def __init__(
        self,
        config: LeaderboardConfig,
        evaluations: EvaluationRepository,
        requests: RequestRepository,
        moderation: ModerationRepository,
        metadata: ModelMetadataRepository,
    ) -> None:
        self.config = config
        self.evaluations = evaluations
        self.requests = requests
        self.moderation = moderation
        self.metadata = metadata

    @property
    def columns(self) -> list[str]:
        return table_columns(self.config)

    def rows(self) -> list[dict[str, Any]]:
        by_id = {r.id: r for r in self.requests.all()}
        pairs = [(e, by_id[e.request_id]) for e in self.evaluations.latest(self.config.name)]
        return latest_rows(pairs, self.config, table_context(self.moderation, self.metadata))

    def ranked(self) -> list[dict[str, Any]]:
        """Every row, best average first (rows without an average last)."""
        return self._ordered(Query(sort=self.config.average.column))

    def query(self, query: Query, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """(rows matching, the page of them) sorted by ``query.sort`` (missing values last)."""
        ordered = self._ordered(query)
        return len(ordered), ordered[offset : offset + limit]

    def page(self, query: Query, limit: int, offset: int) -> TablePage:
        """A page of the table, each row with the range of ranks it could hold (``rank_ranges``)."""
        ordered = self._ordered(query)
        ranks = rank_ranges(ordered, query.sort, f"{query.sort} stderr", query.descending)
        return TablePage(len(ordered), ordered[offset : offset + limit], ranks[offset : offset + limit])

    def _ordered(self, query: Query) -> list[dict[str, Any]]:
        if query.sort not in self.columns:
            raise InvalidInput(f"sort must be a column of the table: one of {', '.join(self.columns)}")
        rows = [row for row in self.rows() if _matches(row, query)]
        present = [r for r in rows if r[query.sort] is not None]
        present.sort(key=lambda r: r[query.sort], reverse=query.descending)
        return present + [r for r in rows if r[query.sort] is None]


def _matches(row: dict[str, Any], query: Query) -> bool:
    if query.model_type is not None and row["Type"] != TYPE_LABELS[query.model_type][1]:
        return False
    if query.precision is not None and row["Precision"] != query.precision.value:
        return False
    params = row["#Params (B)"]
    if query.min_params_b is not None and (params is None or params < query.min_params_b):
        return False
    if query.max_params_b is not None and (params is None or params > query.max_params_b):
        return False
    if query.chat_template is not None and row["Chat Template"] is not query.chat_template:
        return False
    if (query.official_only and not row["Official Providers"]) or (query.hide_flagged and row["Flagged"]):
        return False
    if query.hide_merged and row["Merged"]:
        return False
    return not (query.search and query.search.lower() not in row["fullname"].lower())


def rank_ranges(
    ordered: Sequence[dict[str, Any]], column: str, stderr_column: str, descending: bool
) -> list[tuple[int, int] | None]:
    """The ranks each row of ``ordered`` (sorted by ``column``) could hold, given each score ± its standard
    error: best = 1 + the rows whose whole interval is better than this row's, worst = the rows whose
    interval is not wholly worse (this one included). Rows whose intervals overlap share ranks, so a tie
    within the error shows. In a column without standard errors equal values share ranks; a column of
    text ranks by position; a row without a value has no rank."""
    valued = [r[column] for r in ordered if r[column] is not None]
    if not valued or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in valued):
        return [(i, i) if r[column] is not None else None for i, r in enumerate(ordered, start=1)]
    sign = 1.0 if descending else -1.0  # higher is better when descending

    def interval(row: dict[str, Any]) -> tuple[float, float]:
        error = row.get(stderr_column)
        error = abs(error) if isinstance(error, int | float) and not isinstance(error, bool) else 0.0
        value = sign * row[column]
        return value - error, value + error

    intervals = [interval(r) for r in ordered if r[column] is not None]
    lows = sorted(low for low, _ in intervals)
    highs = sorted(high for _, high in intervals)
    ranks: list[tuple[int, int] | None] = []
    for row in ordered:
        if row[column] is None:
            ranks.append(None)
            continue
        low, high = interval(row)
        better = len(lows) - bisect_right(lows, high)  # their lowest lies above this one's highest
        worse = bisect_left(highs, low)  # their highest lies below this one's lowest
        ranks.append((better + 1, len(intervals) - worse))
    return ranks
