"""The leaderboard as people browse it: one row per (model, sha, precision), its latest result version, in
the published table's columns; sorted, filtered and searched for the API."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from backend.domain import EvalRequest, ModelType, Precision
from backend.errors import InvalidInput
from backend.judged.config import JudgedConfig
from backend.leaderboards.config import AnyConfig, LeaderboardConfig
from backend.publish.table import TYPE_LABELS, Context, build_row, default_sort, stderr_column, table_columns
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
    results: Iterable[tuple[Evaluation, EvalRequest]], config: AnyConfig, context: Context
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


class Filters(Protocol):
    """The table filters as a page's view or an API call reads them."""

    @property
    def model_type(self) -> ModelType | None: ...

    @property
    def precision(self) -> Precision | None: ...

    @property
    def min_params(self) -> float | None: ...

    @property
    def max_params(self) -> float | None: ...

    @property
    def search(self) -> str | None: ...

    @property
    def chat_template(self) -> bool | None: ...

    @property
    def official(self) -> bool: ...

    @property
    def hide_flagged(self) -> bool: ...

    @property
    def hide_merged(self) -> bool: ...


def query_of(filters: Filters, sort: str, descending: bool) -> Query:
    """The query of ``filters`` sorted by ``sort``."""
    return Query(
        sort,
        descending,
        filters.model_type,
        filters.precision,
        filters.min_params,
        filters.max_params,
        filters.search,
        chat_template=filters.chat_template,
        official_only=filters.official,
        hide_flagged=filters.hide_flagged,
        hide_merged=filters.hide_merged,
    )


@dataclass(frozen=True)
class TablePage:
    """A page of the table: how many rows match, the page's rows, and each row's rank range."""

    total: int
    rows: list[dict[str, Any]]
    ranks: list[tuple[int, int] | None]  # (best, worst) rank within the standard errors; None: no score


Key = tuple[str, str, str]  # (model, sha, precision): one row each


@dataclass(frozen=True)
class Stamp:
    """What the table is built from, in a few cheap queries: when it differs, the table has changed (in
    this process or in another one writing the same database: the worker, the scheduler, the CLI)."""

    results: tuple[int, int]  # the leaderboard's result versions: how many, the newest id (never updated)
    flagged: frozenset[str]
    official_providers: frozenset[str]
    hub: tuple[int, int]  # the Hub metadata: how many models, how many changes in all

    @property
    def context(self) -> tuple[frozenset[str], frozenset[str], tuple[int, int]]:
        return self.flagged, self.official_providers, self.hub


class Table:
    """The table at one stamp: its rows by key, and each sorted order once it was asked for. The requests
    of the rows are FINISHED, which no request leaves: the fields a row shows of its request never change."""

    def __init__(
        self,
        stamp: Stamp,
        latest: dict[Key, tuple[Evaluation, EvalRequest]],
        context: Context,
        rows: dict[Key, dict[str, Any]],
        stderr_of: Callable[[str], str] = lambda column: f"{column} stderr",
    ) -> None:
        self.stamp = stamp
        self.stderr_of = stderr_of
        self.latest = latest
        self.context = context
        self.by_key = rows
        self.rows = [rows[key] for key in sorted(rows)]
        self._orders: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        self._intervals: dict[tuple[str, bool], Intervals] = {}

    def ordered(self, column: str, descending: bool) -> list[dict[str, Any]]:
        """Every row sorted by ``column`` (ties in key order, missing values last), sorted once."""
        found = self._orders.get((column, descending))
        if found is None:
            present = [r for r in self.rows if r[column] is not None]
            present.sort(key=itemgetter(column), reverse=descending)
            found = present + [r for r in self.rows if r[column] is None]
            self._orders[(column, descending)] = found
        return found

    def intervals(self, column: str, descending: bool) -> Intervals:
        """The scores ± standard errors of ``ordered(column, descending)``, for its rank ranges, built once."""
        found = self._intervals.get((column, descending))
        if found is None:
            found = Intervals(self.ordered(column, descending), column, self.stderr_of(column), descending)
            self._intervals[(column, descending)] = found
        return found


C = TypeVar("C", LeaderboardConfig, JudgedConfig)


class LeaderboardService(Generic[C]):
    """The table, built once and kept while its stamp (a few cheap queries a call) stays the same; when
    results are added only those are read, and a change of moderation or Hub metadata rebuilds the rows from
    the results already read. The harness output of a result is never read for it."""

    def __init__(
        self,
        config: C,
        evaluations: EvaluationRepository,
        requests: RequestRepository,
        moderation: ModerationRepository,
        metadata: ModelMetadataRepository,
    ) -> None:
        self.config: C = config
        self.evaluations = evaluations
        self.requests = requests
        self.moderation = moderation
        self.metadata = metadata
        self._table: Table | None = None
        self._building = threading.Lock()

    @property
    def columns(self) -> list[str]:
        return table_columns(self.config)

    @property
    def default_sort(self) -> str:
        """The column the table is ranked by unless asked otherwise."""
        return default_sort(self.config)

    def rows(self) -> list[dict[str, Any]]:
        """Every row, by (model, sha, precision)."""
        return [dict(row) for row in self.table().rows]

    def ranked(self) -> list[dict[str, Any]]:
        """Every row, best average first (rows without an average last)."""
        return [dict(row) for row in self._ordered(Query(sort=self.default_sort))]

    def query(self, query: Query, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """(rows matching, the page of them) sorted by ``query.sort`` (missing values last)."""
        ordered = self._ordered(query)
        return len(ordered), [dict(row) for row in ordered[offset : offset + limit]]

    def page(self, query: Query, limit: int, offset: int) -> TablePage:
        """A page of the table, each row with the range of ranks it could hold among the rows matching
        (``rank_ranges``)."""
        table, ordered = self._view(query)
        window = slice(offset, offset + limit)
        whole = ordered is table.ordered(query.sort, query.descending)
        ranks = table.intervals(query.sort, query.descending).ranks(ordered, window, whole)
        return TablePage(len(ordered), [dict(row) for row in ordered[window]], ranks)

    def _ordered(self, query: Query) -> list[dict[str, Any]]:
        return self._view(query)[1]

    def _view(self, query: Query) -> tuple[Table, list[dict[str, Any]]]:
        if query.sort not in self.columns:
            raise InvalidInput(f"sort must be a column of the table: one of {', '.join(self.columns)}")
        table = self.table()
        ordered = table.ordered(query.sort, query.descending)
        if query == Query(query.sort, query.descending):
            return table, ordered
        return table, [row for row in ordered if _matches(row, query)]

    def stamp(self) -> Stamp:
        return Stamp(
            results=self.evaluations.stamp(self.config.name),
            flagged=self.moderation.flags.keys(),
            official_providers=self.moderation.official_providers.keys(),
            hub=self.metadata.stamp(),
        )

    def table(self) -> Table:
        """The table as the database holds it now (the stamp is read before the rows: rows at least as new
        as their stamp, never older)."""
        stamp = self.stamp()
        table = self._table
        if table is not None and table.stamp == stamp:
            return table
        with self._building:  # one build at a time; a request that waited may find it built
            table = self._table
            if table is None or table.stamp != stamp:
                table = self._build(stamp, table)
                self._table = table
        return table

    def _build(self, stamp: Stamp, previous: Table | None) -> Table:
        name = self.config.name
        changed: set[Key] | None = None  # None: every row
        latest: dict[Key, tuple[Evaluation, EvalRequest]]
        if previous is not None and previous.stamp.results == stamp.results:
            latest, changed = previous.latest, set()
        elif previous is not None and (added := self._added(previous, stamp)) is not None:
            latest, changed = dict(previous.latest), set()
            for evaluation, request in added:
                key = _key(request)
                held = latest.get(key)
                if held is None or (held[1].id, held[0].version) <= (request.id, evaluation.version):
                    latest[key] = (evaluation, request)
                    changed.add(key)
        else:
            results = self.evaluations.latest(name, with_results=False)
            by_id = {r.id: r for r in self.requests.evaluated(name)}  # read after the results: all there
            latest = {}
            for evaluation in results:  # by request, then version: the last of a key wins
                request = by_id[evaluation.request_id]
                latest[_key(request)] = (evaluation, request)
        if previous is not None and previous.stamp.context == stamp.context:
            context = previous.context
        else:
            hub = (
                previous.context.hub if previous and previous.stamp.hub == stamp.hub else self.metadata.all()
            )
            context = Context(stamp.flagged, stamp.official_providers, hub)
            changed = None
        if changed is None or previous is None:
            rows = {key: build_row(e, r, self.config, context) for key, (e, r) in latest.items()}
        else:
            rows = dict(previous.by_key)
            for key in changed:
                evaluation, request = latest[key]
                rows[key] = build_row(evaluation, request, self.config, context)
        return Table(stamp, latest, context, rows, lambda column: stderr_column(self.config, column))

    def _added(self, previous: Table, stamp: Stamp) -> list[tuple[Evaluation, EvalRequest]] | None:
        """The results stored since ``previous`` was built, with their requests; None when more changed than
        results added (then the table is read again). Results stored after ``stamp`` was read may be among
        them: rows newer than their stamp are read again with the next one, never missed."""
        count, newest = previous.stamp.results
        added = self.evaluations.added_since(self.config.name, newest, with_results=False)
        if count + sum(1 for e in added if (e.id or 0) <= stamp.results[1]) != stamp.results[0]:
            return None
        by_id = {r.id: r for r in self.requests.evaluated(self.config.name, newest)}
        return [(e, by_id[e.request_id]) for e in added]


def _key(request: EvalRequest) -> Key:
    return request.model, request.sha, request.precision.value


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


class Intervals:
    """Each valued row's score ± standard error, as (low, high) with the better end high, for ranking: built
    once per sorted order of the kept table, then used for any subset of its rows (a filtered view)."""

    def __init__(self, ordered: Sequence[dict[str, Any]], column: str, stderr_column: str, descending: bool):
        values = [r[column] for r in ordered]
        self.numeric = all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
        )
        valued = [(i, r) for i, r in enumerate(ordered) if r[column] is not None] if self.numeric else []
        sign = 1.0 if descending else -1.0  # higher is better when descending
        value = np.array([sign * r[column] for _, r in valued], dtype=float)
        error = np.array([_error(r.get(stderr_column)) for _, r in valued], dtype=float)
        self.lows, self.highs = value - error, value + error
        self.sorted_lows, self.sorted_highs = np.sort(self.lows), np.sort(self.highs)
        self.position = {id(r): k for k, (_, r) in enumerate(valued)}  # a row (by identity) -> its index

    def ranks(
        self, rows: Sequence[dict[str, Any]], window: slice, whole: bool = False
    ) -> list[tuple[int, int] | None]:
        """The rank ranges of ``rows[window]`` among ``rows``: the whole order these intervals were built
        from (``whole``), or a subset of its rows in the same order (a filtered view)."""
        shown = range(len(rows))[window]
        if not self.numeric:
            return [(i + 1, i + 1) for i in shown]
        if whole:
            lows, highs = self.sorted_lows, self.sorted_highs
        else:
            subset = np.fromiter(
                (self.position[id(r)] for r in rows if id(r) in self.position), dtype=np.intp
            )
            lows, highs = np.sort(self.lows[subset]), np.sort(self.highs[subset])
        count = len(lows)
        out: list[tuple[int, int] | None] = []
        for i in shown:
            k = self.position.get(id(rows[i]))
            if k is None:
                out.append(None)
                continue
            better = count - int(np.searchsorted(lows, self.highs[k], side="right"))  # wholly above
            worse = int(np.searchsorted(highs, self.lows[k], side="left"))  # wholly below
            out.append((better + 1, count - worse))
        return out


def _error(value: Any) -> float:
    return abs(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def rank_ranges(
    ordered: Sequence[dict[str, Any]],
    column: str,
    stderr_column: str,
    descending: bool,
    window: slice | None = None,
) -> list[tuple[int, int] | None]:
    """The ranks each row of ``ordered[window]`` (``ordered`` sorted by ``column``; all rows when no window)
    could hold among all of ``ordered``, given each score ± its standard error: best = 1 + the rows whose
    whole interval is better than this row's, worst = the rows whose interval is not wholly worse (this one
    included). Rows whose intervals overlap share ranks, so a tie within the error shows. In a column
    without standard errors equal values share ranks; a column of text ranks by position; a row without a
    value has no rank."""
    intervals = Intervals(ordered, column, stderr_column, descending)
    return intervals.ranks(ordered, window or slice(None), whole=True)
