"""`leaderboard arena`: the arena's Bradley-Terry ratings of a battles file (the public Chatbot Arena's format).

main.py registers it with `cli.add_command(arena)`.
"""

from __future__ import annotations

from pathlib import Path

import click

from backend.cli.common import console, emit, handle_errors
from backend.errors import InvalidInput


@click.group()
def arena() -> None:
    """The arena: pairwise battles between models and their ratings."""


def _anchor(value: str | None) -> tuple[str, float] | None:
    if value is None:
        return None
    model, sep, rating = value.rpartition("=")
    try:
        number = float(rating)
    except ValueError:
        number = float("nan")
    if not sep or not model or number != number:
        raise InvalidInput(
            f"--anchor {value!r} is not MODEL=RATING: give a model of the battles and its rating, "
            "e.g. --anchor mixtral-8x7b-instruct-v0.1=1114"
        )
    return model, number


@arena.command("ratings")
@click.argument("battles", metavar="BATTLES")
@click.option("--bootstrap", "rounds", type=click.IntRange(0, 10_000), default=100, show_default=True,
              help="Bootstrap rounds of the 95% intervals (0: none).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--anchor",
    metavar="MODEL=RATING",
    default=None,
    help="Pin MODEL's rating (the public board pinned mixtral-8x7b-instruct-v0.1=1114); default: mean 1000.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a list of {model, rating, rating_lower, "
              "rating_upper, rank, battles}, best first.")  # fmt: skip
@handle_errors
def ratings(battles: str, rounds: int, seed: int, anchor: str | None, as_json: bool) -> None:
    """Bradley-Terry ratings (the Arena's scale) of BATTLES: a .json, .jsonl, .csv or .parquet file of
    records with model_a, model_b and winner (model_a, model_b, tie, tie (bothbad)). Warnings go to stderr."""
    from rich.table import Table

    from backend.arena.battles import read_battles
    from backend.arena.ratings import fit_ratings

    pinned = _anchor(anchor)
    fit = fit_ratings(read_battles(Path(battles), battles), bootstrap=rounds, seed=seed, anchor=pinned)
    for warning in fit.warnings:
        click.echo(f"warning: {warning}", err=True)

    def text() -> None:
        interval = f"95% CI, {fit.bootstrap} rounds" if fit.bootstrap else "no bootstrap"
        shown = Table(title=f"{Path(battles).name}: {fit.battles:,} battles, {len(fit.models)} models")
        for column in ("rank", "model", "rating", interval, "battles"):
            shown.add_column(column, justify="left" if column == "model" else "right")
        for m in fit.models:
            ci = (
                "-"
                if m.rating_lower is None or m.rating_upper is None
                else f"+{m.rating_upper - m.rating:.1f} / -{m.rating - m.rating_lower:.1f}"
            )
            shown.add_row(str(m.rank), m.model, f"{m.rating:.1f}", ci, f"{m.battles:,}")
        console.print(shown)

    emit(as_json, fit.rows(), text)
