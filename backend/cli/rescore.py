"""`leaderboard rescore --benchmark KEY`: re-score stored evaluations with the current scorers, no model run.

main.py registers it with `cli.add_command(rescore)`. Prints old and new published scores; storing the new
version is not done here.
"""

from __future__ import annotations

import click

from backend.cli.common import console, emit, handle_errors, open_app


@click.command("rescore")
@click.option("--benchmark", "benchmark_key", required=True, help="The benchmark key (e.g. math_hard).")
@click.option("--models", "-m", "models", multiple=True, help="Only this model (ORG/NAME); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print old and new scores as JSON.")
@handle_errors
def rescore(benchmark_key: str, models: tuple[str, ...], as_json: bool) -> None:
    """Re-score BENCHMARK of every stored evaluation from its per-sample outputs and print old vs new.

    The scorers are the current task set's (a task's `process_results` in tasks/<task_set>.yaml); no model
    is loaded. Nothing is stored or published.
    """
    from rich.table import Table

    from backend.services.rescore import RescoreService

    app = open_app()
    try:
        service = RescoreService(app.settings, app.evaluations, app.requests)
        rescored = service.rescore(benchmark_key, list(models) or None)
        benchmark = service.config.benchmark(benchmark_key)
    finally:
        app.close()
    columns = [benchmark.raw_column, benchmark.column, service.config.average.column]

    def text() -> None:
        table = Table(title=f"{service.config.name}: {benchmark.display} re-scored ({len(rescored)} models)")
        for name in ("request", "model", "precision"):
            table.add_column(name)
        for column in columns:
            table.add_column(f"{column} old", justify="right")
            table.add_column(f"{column} new", justify="right")
        for r in rescored:
            cells = [str(r.request_id), r.model, r.precision]
            for column in columns:
                cells += [_fmt(r.old_scores.get(column)), _fmt(r.new_scores.get(column))]
            table.add_row(*cells)
        console.print(table)

    value = [
        {
            "request": r.request_id,
            "model": r.model,
            "sha": r.sha,
            "precision": r.precision,
            "benchmark": r.benchmark,
            "old": r.old_scores,
            "new": r.new_scores,
            "changed": r.changed,
        }
        for r in rescored
    ]
    emit(as_json, value, text)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
