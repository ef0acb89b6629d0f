"""`leaderboard publish` and `leaderboard results download`: results out to LEADERBOARD_RESULTS and back."""

from __future__ import annotations

from pathlib import Path

import click

from backend.cli.common import console, emit, handle_errors, open_app
from backend.publish.files import write_atomic
from backend.publish.service import FORMATS


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def publish(as_json: bool) -> None:
    """Publish every evaluated result not yet published to LEADERBOARD_RESULTS (a folder or a Hub dataset),
    and the arena's battles and ratings (LEADERBOARD_ARENA) when its votes changed.

    Safe to repeat: what is already published is not published again; what could not be delivered stays
    in the outbox and goes with the next publish.
    """
    app = open_app()
    try:
        report = app.publish_results()
    finally:
        app.close()

    def text() -> None:
        if report.published == 0 and report.arena_battles == 0:
            console.print(f"nothing to publish: {report.target} is up to date")
        else:
            what = [f"{report.published} evaluation(s)"] if report.published else []
            if report.arena_battles:
                what.append(f"the arena's {report.arena_battles} battles and ratings")
            console.print(
                f"published {' and '.join(what)} to {report.target} "
                f"({len(report.changed_files)} files changed); outbox: {report.outbox}"
            )
        if report.refused:
            ids = ", ".join(map(str, report.refused))
            click.echo(
                f"not published: request(s) {ids}, whose model id or sha is not valid (data an older "
                "version accepted): correct or delete them in the database",
                err=True,
            )

    emit(as_json, report, text)


@click.group()
def results() -> None:
    """The published results."""


@results.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: leaderboard.FORMAT"
)
@handle_errors
def download(fmt: str, out: Path | None) -> None:
    """Download the leaderboard table from LEADERBOARD_RESULTS (a folder or a Hub dataset)."""
    app = open_app()
    try:
        data = app.publishing.download(app.results_target(), fmt)
    finally:
        app.close()
    path = out or Path(f"leaderboard.{fmt}")
    write_atomic(path, data)
    console.print(f"wrote {path} ({len(data)} bytes)")
