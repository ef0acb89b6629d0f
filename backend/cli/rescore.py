"""`leaderboard rescore --benchmark KEY`: re-score stored results with the current scorers (no model run),
store what changed as new result versions and publish them.

main.py registers it with `cli.add_command(rescore)`.
"""

from __future__ import annotations

import click

from backend.cli.common import console, emit, handle_errors, open_app
from backend.errors import PublishFailed


@click.command("rescore")
@click.option("--benchmark", "benchmark_key", required=True, help="The benchmark key (e.g. math_hard).")
@click.option("--models", "-m", "models", multiple=True, help="Only this model (ORG/NAME); repeatable.")
@click.option("--dry-run", is_flag=True, help="Print old and new scores; store and publish nothing.")
@click.option(
    "--publish/--no-publish",
    "publish",
    default=True,
    show_default=True,
    help="Publish the new versions to LEADERBOARD_RESULTS (else they wait for `leaderboard publish`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def rescore(benchmark_key: str, models: tuple[str, ...], dry_run: bool, publish: bool, as_json: bool) -> None:
    """Re-score BENCHMARK of every stored result from its per-sample outputs; store each result that
    changed as a new version (the earlier versions are kept) and publish it.

    The scorers are the current task set's (a task's `process_results` in tasks/<task_set>.yaml); no model
    is loaded. A result whose scores do not change gets no new version, so repeating a re-score is safe.
    """
    from rich.table import Table

    app = open_app()
    publish_error: PublishFailed | None = None
    report = None
    try:
        service = app.rescoring
        rescored = service.rescore(benchmark_key, list(models) or None, store=not dry_run)
        stored = [r for r in rescored if r.version is not None]
        if stored and publish:
            try:
                report = app.publish_results()
            except PublishFailed as exc:  # the new versions are stored: they wait in the outbox
                publish_error = exc
        config = service.config
    finally:
        app.close()
    benchmark = config.benchmark(benchmark_key)
    columns = [benchmark.raw_column, benchmark.column, config.average.column]

    def text() -> None:
        table = Table(title=f"{config.name}: {benchmark.display} re-scored ({len(rescored)} models)")
        for name in ("request", "model", "precision", "version"):
            table.add_column(name)
        for column in columns:
            table.add_column(f"{column} old", justify="right")
            table.add_column(f"{column} new", justify="right")
        for r in rescored:
            cells = [str(r.request_id), r.model, r.precision, _version(r.from_version, r.version, dry_run)]
            for column in columns:
                cells += [_fmt(r.old_scores.get(column)), _fmt(r.new_scores.get(column))]
            table.add_row(*cells)
        console.print(table)
        if dry_run:
            console.print("dry run: nothing stored")
        else:
            console.print(f"stored {len(stored)} new version(s); {len(rescored) - len(stored)} unchanged")
        if report is not None:
            console.print(f"published {report.published} version(s) to {report.target}")
        elif stored and not publish:
            console.print("not published: run `leaderboard publish`")

    value = {
        "benchmark": benchmark_key,
        "dry_run": dry_run,
        "rescored": [
            {
                "request": r.request_id,
                "model": r.model,
                "sha": r.sha,
                "precision": r.precision,
                "from_version": r.from_version,
                "version": r.version,
                "old": r.old_scores,
                "new": r.new_scores,
                "changed": r.changed,
            }
            for r in rescored
        ],
        "stored": len(stored),
        "published": None if report is None else report.published,
    }
    emit(as_json, value, text)
    if publish_error is not None:
        raise publish_error


def _version(old: int, new: int | None, dry_run: bool) -> str:
    if new is not None:
        return f"v{old} -> v{new}"
    return f"v{old}" if dry_run else f"v{old} (unchanged)"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
