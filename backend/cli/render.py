"""How requests look on a terminal and as JSON (the same fields the requests export uses)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from backend.domain import EvalRequest, RequestDetail

if TYPE_CHECKING:
    from backend.arena.ratings import Ratings


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> str:
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    elif isinstance(value, list) and value and hasattr(value[0], "__dataclass_fields__"):
        value = [asdict(v) for v in value]
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def queue_table(requests: list[EvalRequest], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "model", "sha", "precision", "votes", "status", "attempts", "submitted", "reason"):
        table.add_column(column, overflow="fold")
    for r in requests:
        table.add_row(
            str(r.id),
            r.model,
            r.sha[:10],
            r.precision.value,
            str(r.votes),
            r.status.value,
            str(r.attempts),
            r.submitted_at.strftime("%Y-%m-%d %H:%M"),
            r.failure_reason or "",
        )
    return table


def print_detail(console: Console, detail: RequestDetail) -> None:
    """Everything about a request, on the server's own terminal: the failure's log path and tail too."""
    r = detail.request
    console.print(
        f"[bold]request {r.id}[/bold]: {r.model} @ {r.sha} ({r.precision}, {r.weight_type}, {r.model_type})",
        markup=True,
    )
    console.print(f"status {r.status}, {r.votes} votes, {r.attempts} attempts, submitted by {r.sender}")
    if r.failure_reason:
        console.print(f"failure: {r.failure_reason}", markup=False)
    for h in detail.history:
        console.print(
            f"  {h.at:%Y-%m-%d %H:%M:%S} {h.from_status or '-'} -> {h.to_status} by {h.actor}: {h.reason or ''}",
            markup=False,
        )
        if h.log_path:
            console.print(f"    log: {h.log_path}", markup=False)
    if r.failure_log_path:
        console.print(f"log: {r.failure_log_path}", markup=False)
    if r.failure_log_tail:
        console.print("--- last lines of the log ---", markup=False)
        console.print(r.failure_log_tail, markup=False, highlight=False)


def scores_table(title: str, score_columns: list[str], rows: list[dict[str, Any]]) -> Table:
    """The leaderboard for people: normalized scores only (the raw ones are in --json)."""
    shown = [c for c in score_columns if not c.endswith(" Raw")]
    table = Table(title=title)
    for column in ["model", "precision", *shown]:
        table.add_column(column)
    for row in rows:
        values = [row.get(c) for c in shown]
        table.add_row(row["fullname"], row["Precision"], *("-" if v is None else f"{v:.2f}" for v in values))
    return table


def ratings_table(fit: Ratings, title: str) -> Table:
    """An arena's ratings, best first: rank, model, rating, its 95% interval and battles."""
    interval = f"95% CI, {fit.bootstrap} rounds" if fit.bootstrap else "no bootstrap"
    table = Table(title=title)
    for column in ("rank", "model", "rating", interval, "battles"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in fit.models:
        ci = (
            "-"
            if m.rating_lower is None or m.rating_upper is None
            else f"+{m.rating_upper - m.rating:.1f} / -{m.rating - m.rating_lower:.1f}"
        )
        table.add_row(str(m.rank), m.model, f"{m.rating:.1f}", ci, f"{m.battles:,}")
    return table
