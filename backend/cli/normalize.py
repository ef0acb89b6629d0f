"""`leaderboard normalize RESULTS.json`: a results file's published scores, as one JSON object.

main.py registers it with `cli.add_command(normalize)`. Everything beyond click is imported when the command
runs (the CLI starts fast), and handle_errors too, so main.py may import this module wherever it likes.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("normalize")
@click.argument(
    "results_file", metavar="RESULTS.json", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--config",
    "config_name",
    default="open_llm_v2",
    show_default=True,
    help="Leaderboard config: a name in leaderboard_configs/ or a path to a .yaml file.",
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Give null columns (and a null average) for benchmarks absent from the results instead of failing.",
)
@click.option("--stderr", "with_stderr", is_flag=True, help="Add the standard-error columns.")
def normalize(results_file: Path, config_name: str, allow_missing: bool, with_stderr: bool) -> None:
    """Print the published score columns of RESULTS.json (an lm-eval results_<time>.json) as one JSON object.

    Raw columns are fractions (0..1), the others points (0..100), unrounded; see
    backend/leaderboards/normalize.py for the formulas. Where a benchmark is read from lm-eval's group
    entry (its subtasks, or their sample counts, are not in the file, as in the public details cards), a
    note on stderr says so.
    """
    from backend.cli.common import handle_errors

    handle_errors(_normalize)(results_file, config_name, allow_missing, with_stderr)


def _normalize(results_file: Path, config_name: str, allow_missing: bool, with_stderr: bool) -> None:
    from backend.leaderboards import normalize as scoring
    from backend.leaderboards.config import load_config
    from backend.leaderboards.harness_results import load_results

    config = load_config(config_name)
    results = load_results(results_file)
    row = scoring.normalize(results, config, allow_missing=allow_missing)
    if with_stderr:
        row.update(scoring.standard_errors(results, config, allow_missing=allow_missing))
    for score in scoring.score_benchmarks(results, config, allow_missing=allow_missing).values():
        if score is not None and score.from_group_entry:
            click.echo(f"note: {score.from_group_entry}", err=True)
    click.echo(json.dumps(row, indent=2, ensure_ascii=False))
