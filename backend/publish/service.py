"""Publish every evaluated, not yet published result to a target: results files, the table, per-sample
details, the requests export and the dataset card, delivered at once.

The outbox is the publications table: evaluations are queued for the target first, delivered, then marked
published. Publishing with an empty outbox changes nothing; a failed delivery leaves the outbox as it was.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.parquet as pq

from backend.domain import EvalRequest, is_repo_id, is_sha
from backend.errors import (
    InvalidInput,
    LeaderboardNotFound,
    NothingPublished,
    PublishedFileNotFound,
    PublishFailed,
    UnsafePath,
)
from backend.judged.config import JudgedConfig
from backend.leaderboards.config import AnyConfig, LeaderboardConfig
from backend.paths import parts_of
from backend.publish import arena_files, judged_files
from backend.publish import files as layout
from backend.publish.table import csv_bytes, parquet_bytes, to_arrow
from backend.publish.targets import Target
from backend.services.arena_data import ArenaDataService
from backend.services.leaderboard import latest_rows, table_context
from backend.services.requests_export import RequestsExportService
from backend.storage.model_metadata import ModelMetadataRepository
from backend.storage.moderation import ModerationRepository
from backend.storage.publications import Publication, PublicationRepository
from backend.storage.requests import RequestRepository

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "json")


@dataclass
class PublishReport:
    target: str
    published: int = 0  # evaluations delivered by this publish
    changed_files: list[str] = field(default_factory=list)
    outbox: int = 0  # evaluations still waiting for this target
    refused: list[int] = field(default_factory=list)  # requests whose model id or sha is not valid
    arena_battles: int = 0  # the arena's voted battles, when this publish wrote its files (else 0)


def publishable(request: EvalRequest) -> bool:
    """Whether a request's ids may name files of the dataset (the paths are built from them)."""
    return is_repo_id(request.model) and is_sha(request.sha)


class PublishService:
    def __init__(
        self,
        config: LeaderboardConfig,
        publications: PublicationRepository,
        requests: RequestRepository,
        moderation: ModerationRepository,
        metadata: ModelMetadataRepository,
        requests_export: RequestsExportService,
        clock: Callable[[], datetime],
        judged: Sequence[JudgedConfig] = (),
        arena: ArenaDataService | None = None,
    ) -> None:
        self.config = config
        self.judged = list(judged)
        self.arena = arena
        self._arena_stamps: dict[str, dict[str, Any]] = {}  # target -> the arena stamp it holds, as last seen
        self.publications = publications
        self.requests = requests
        self.moderation = moderation
        self.metadata = metadata
        self.requests_export = requests_export
        self.clock = clock

    @property
    def boards(self) -> list[AnyConfig]:
        """Every leaderboard of the deployment: the benchmark one, then the judged ones."""
        return [self.config, *self.judged]

    def publish(self, target: Target) -> PublishReport:
        """Deliver the outbox of `target` (every leaderboard's, in one delivery), and the arena's files when
        its votes changed since the target last took them; raises PublishFailed (saying what is left) when
        it cannot."""
        rows_of: dict[str, list[Publication]] = {}
        for board in self.boards:
            self.publications.enqueue_new(target.key, board.name, self.clock())
            rows_of[board.name] = self.publications.for_target(target.key, board.name)
        report = PublishReport(target=target.key)
        arena_stamp, arena_due = self._arena_due(target)
        if not arena_due and all(p.published_at is not None for rows in rows_of.values() for p in rows):
            return report
        by_id = {r.id: r for r in self.requests.all()}
        refused = [
            p for rows in rows_of.values() for p in rows if not publishable(by_id[p.evaluation.request_id])
        ]
        if refused:  # data an older version let in: never a path out of the dataset, never a stop for others
            report.refused = sorted({p.evaluation.request_id for p in refused})
            log.warning(
                "requests with an invalid model id or sha not published", extra={"requests": report.refused}
            )
            self.publications.mark_failed(
                [p.id for p in refused if p.published_at is None],
                "the request's model id or sha is not valid: fix or remove the request",
            )
            rows_of = {
                name: [p for p in rows if publishable(by_id[p.evaluation.request_id])]
                for name, rows in rows_of.items()
            }
        pending = [p for rows in rows_of.values() for p in rows if p.published_at is None]
        if not pending and not arena_due:
            report.outbox = self.publications.outbox_count(target.key)
            return report
        arena_tables = None
        if self.arena is not None and arena_stamp is not None:
            arena_tables = arena_files.card_configs(self.arena.name, self.arena.title)
        payload, per_publication = self._files(rows_of, by_id, arena_tables)
        parts = []
        if pending:
            names = ", ".join(n for n, rows in rows_of.items() if any(p.published_at is None for p in rows))
            parts.append(f"{len(pending)} evaluation(s) of {names}")
        if self.arena is not None and arena_stamp is not None and arena_due:
            card = payload.pop(layout.CARD)  # the card last: it never names a file not yet written
            payload.update(arena_files.arena_files(self.arena, arena_stamp))
            payload[layout.CARD] = card
            parts.append(f"the arena {self.arena.name} ({arena_stamp['votes']} battles)")
        message = "Publish " + " and ".join(parts)
        try:
            report.changed_files = target.put(payload, message)
        except PublishFailed as exc:
            self.publications.mark_failed([p.id for p in pending], exc.message)
            left = self.publications.outbox_count(target.key)
            arena = "; the arena's files go with the next publish" if arena_due else ""
            raise PublishFailed(f"{exc.message}; {left} evaluation(s) left in the outbox{arena}") from exc
        self.publications.mark_published(per_publication, self.clock())
        report.published = len(pending)
        if arena_due and arena_stamp is not None:
            self._arena_stamps[target.key] = arena_stamp
            report.arena_battles = int(arena_stamp["votes"])
        report.outbox = self.publications.outbox_count(target.key)  # evaluations finished meanwhile
        log.info("published", extra={"target": target.key, "evaluations": len(pending)})
        return report

    def outbox(self, target: Target) -> int:
        return self.publications.outbox_count(target.key)

    def _arena_due(self, target: Target) -> tuple[dict[str, Any] | None, bool]:
        """The arena's stamp now (None: no arena, or no vote yet) and whether ``target`` needs its files:
        the stamp it holds (read once, then remembered for this target) is another."""
        if self.arena is None:
            return None, False
        stamp = self.arena.stamp()
        if stamp["votes"] == 0:
            return None, False
        if self._arena_stamps.get(target.key) == stamp:
            return stamp, False
        if arena_files.published_stamp(target, self.arena.name) == stamp:
            self._arena_stamps[target.key] = stamp
            return stamp, False
        return stamp, True

    def _files(
        self,
        rows_of: dict[str, list[Publication]],
        by_id: dict[int, EvalRequest],
        arena_tables: list[tuple[str, str, str]] | None = None,
    ) -> tuple[dict[str, bytes], dict[int, list[str]]]:
        payload: dict[str, bytes] = {}
        per_publication: dict[int, list[str]] = {}
        for publication in rows_of.get(self.config.name, []):
            if publication.published_at is not None:
                continue
            evaluation = publication.evaluation
            request = by_id[evaluation.request_id]
            paths = [layout.results_path(request, evaluation)]
            payload[paths[0]] = layout.results_file(request, evaluation)
            for samples in layout.new_samples_files(evaluation):
                if not Path(samples).is_file():
                    log.warning("samples file missing", extra={"path": samples, "request_id": request.id})
                    continue
                path = layout.details_path(request, evaluation, layout.task_of(samples))
                payload[path] = layout.details_file(Path(samples))
                paths.append(path)
            per_publication[publication.id] = paths
        judged_tables: list[tuple[str, str, str]] = []
        for board in self.judged:
            rows = rows_of.get(board.name, [])
            for publication in rows:
                if publication.published_at is None:
                    request = by_id[publication.evaluation.request_id]
                    files = judged_files.judged_result_files(board, request, publication.evaluation)
                    payload.update(files)
                    per_publication[publication.id] = sorted(files)
            if rows:
                parquet_path, csv_path = judged_files.table_paths(board)
                table = to_arrow(self._table_rows(board, rows, by_id), board)
                payload[parquet_path] = parquet_bytes(table)
                payload[csv_path] = csv_bytes(table)
                judged_tables.append((board.name, board.title, parquet_path))
        table = self.table_files(
            rows_of.get(self.config.name, []), by_id, per_publication, judged_tables, arena_tables
        )
        card = table.pop(layout.CARD)
        payload.update(table)
        payload.update(self._requests_files())
        payload[layout.CARD] = card
        return payload, per_publication

    def table_files(
        self,
        rows: list[Publication],
        by_id: dict[int, EvalRequest],
        new_files: dict[int, list[str]] | None = None,
        judged_tables: list[tuple[str, str, str]] | None = None,
        arena_tables: list[tuple[str, str, str]] | None = None,
    ) -> dict[str, bytes]:
        """The table (parquet and CSV) and the dataset card over every publication row of a target;
        ``new_files`` holds the files of rows being published now (publication id -> paths),
        ``judged_tables`` the judged leaderboards' tables the card lists (name, title, path), and
        ``arena_tables`` the arena's (config name, what it holds, path)."""
        new_files = new_files or {}
        details: list[tuple[str, str, str]] = []  # (model, task, path), oldest version first
        for publication in rows:
            request = by_id[publication.evaluation.request_id]
            paths = new_files.get(publication.id, list(publication.files))
            details += [
                (request.model, PurePosixPath(p).parts[2], p) for p in paths if p.startswith("details/")
            ]
        table = to_arrow(self._table_rows(self.config, rows, by_id), self.config)
        return {
            layout.TABLE_PARQUET: parquet_bytes(table),
            layout.TABLE_CSV: csv_bytes(table),
            layout.CARD: layout.card(
                self.config.title, self.config.name, details, judged_tables, arena_tables
            ),
        }

    def _table_rows(
        self, board: AnyConfig, rows: list[Publication], by_id: dict[int, EvalRequest]
    ) -> list[dict[str, Any]]:
        pairs = [(p.evaluation, by_id[p.evaluation.request_id]) for p in rows]  # by request, then version
        return latest_rows(pairs, board, table_context(self.moderation, self.metadata))

    def _requests_files(self) -> dict[str, bytes]:
        files, _ = self.requests_export.files()
        return {f"{layout.REQUESTS_FOLDER}/{path}": data for path, data in sorted(files.items())}

    def published_file(self, target: Target, path: str) -> bytes:
        """A published results file (``results/...json``) or details file (``details/...parquet``) as the
        target holds it; PublishedFileNotFound for any other path (one not made of plain names included)."""
        wanted = {layout.RESULTS_FOLDER: ".json", layout.DETAILS_FOLDER: ".parquet"}
        try:
            parts = parts_of(path)
        except UnsafePath:
            parts = ()
        if len(parts) < 3 or parts[0] not in wanted or not parts[-1].endswith(wanted[parts[0]]):
            raise PublishedFileNotFound(
                f"'{path[:200]}' is not a file of the results dataset: ask for "
                "results/<org>/<name>/results_<time>.json or details/<org>__<name>/<task>/<precision>_<time>.parquet"
            )
        data = target.read("/".join(parts))
        if data is None:
            raise PublishedFileNotFound(f"'{path[:200]}' is not published: it may come with the next publish")
        return data

    def download(self, target: Target, fmt: str = "parquet", leaderboard: str | None = None) -> bytes:
        """The published table of ``leaderboard`` (default: the benchmark one) from `target`, as parquet,
        CSV or JSON (a list of rows)."""
        if fmt not in FORMATS:
            raise InvalidInput(f"format '{fmt}' is not one of: {', '.join(FORMATS)}")
        path = layout.TABLE_PARQUET
        if leaderboard is not None and leaderboard != self.config.name:
            board = next((b for b in self.judged if b.name == leaderboard), None)
            if board is None:
                known = ", ".join(b.name for b in self.boards)
                raise LeaderboardNotFound(
                    f"no leaderboard named '{leaderboard}' here: the deployment serves {known}"
                )
            path = judged_files.table_paths(board)[0]
        data = target.read(path)
        if data is None:
            raise NothingPublished(f"{target.key} has no {path}: run `leaderboard publish`")
        if fmt == "parquet":
            return data
        table = pq.read_table(io.BytesIO(data))
        if fmt == "csv":
            return csv_bytes(table)
        return (json.dumps(table.to_pylist(), indent=1, ensure_ascii=False) + "\n").encode()
