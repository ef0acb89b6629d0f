"""The arena's place in the results dataset: ``arena/<name>/``, with every voted battle in the public
arena's format (``battles.parquet``, the export's records: no voter's name or address), the ratings
(``ratings.parquet`` and ``ratings.csv``) and ``stamp.json``, what they were built from (the votes, the
ratings' settings, the record format). Publishing compares that stamp with the database's and writes the
files again only when it differs; the card's ``configs:`` make ``load_dataset(repo, "<name>_battles")`` and
``load_dataset(repo, "<name>_ratings")`` load them."""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa

from backend.arena.records import records_bytes
from backend.errors import PublishFailed
from backend.publish.table import csv_bytes, parquet_bytes
from backend.publish.targets import Target
from backend.services.arena_data import ArenaDataService

log = logging.getLogger(__name__)

ARENA_FOLDER = "arena"
BATTLES = "battles.parquet"
RATINGS_PARQUET = "ratings.parquet"
RATINGS_CSV = "ratings.csv"
STAMP = "stamp.json"
RATINGS_SCHEMA = pa.schema(
    [
        ("rank", pa.int64()),
        ("model", pa.string()),
        ("rating", pa.float64()),
        ("rating_lower", pa.float64()),
        ("rating_upper", pa.float64()),
        ("battles", pa.int64()),
    ]
)


def folder(name: str) -> str:
    return f"{ARENA_FOLDER}/{name}"


def card_configs(name: str, title: str) -> list[tuple[str, str, str]]:
    """(config name, what it holds, path) of the arena's two tables, as the card lists them."""
    return [
        (f"{name}_battles", f"{title}: every voted battle", f"{folder(name)}/{BATTLES}"),
        (f"{name}_ratings", f"{title}: the ratings", f"{folder(name)}/{RATINGS_PARQUET}"),
    ]


def published_stamp(target: Target, name: str) -> dict[str, Any] | None:
    """The stamp the target holds, or None (none yet, unreadable, or the target cannot be read now: the
    files are then written again, which is always safe)."""
    try:
        data = target.read(f"{folder(name)}/{STAMP}")
    except PublishFailed as exc:
        log.warning("arena stamp unreadable", extra={"target": target.key, "error": exc.message})
        return None
    if data is None:
        return None
    try:
        stamp = json.loads(data)
    except ValueError:
        return None
    return stamp if isinstance(stamp, dict) else None


def arena_files(data: ArenaDataService, stamp: dict[str, Any]) -> dict[str, bytes]:
    """The arena's files as of ``stamp`` (taken before them: a vote cast meanwhile is in the files and
    makes the next publish write them again)."""
    battles, count = records_bytes(data.records(), ".parquet")
    ratings = data.ratings()
    rows = [] if ratings is None else ratings.rows()
    table = pa.Table.from_pylist(
        [{column: row.get(column) for column in RATINGS_SCHEMA.names} for row in rows], schema=RATINGS_SCHEMA
    )
    log.info("arena files built", extra={"arena": data.name, "battles": count})
    return {
        f"{folder(data.name)}/{BATTLES}": battles,
        f"{folder(data.name)}/{RATINGS_PARQUET}": parquet_bytes(table),
        f"{folder(data.name)}/{RATINGS_CSV}": csv_bytes(table),
        f"{folder(data.name)}/{STAMP}": (json.dumps(stamp, indent=1, sort_keys=True) + "\n").encode(),
    }
