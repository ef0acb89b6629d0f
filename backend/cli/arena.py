"""`leaderboard arena`: the arena's Bradley-Terry ratings of a battles file (the public Chatbot Arena's format).

main.py registers it with `cli.add_command(arena)`.
"""

from __future__ import annotations

from pathlib import Path

import click

from backend.cli.common import console, emit, handle_errors
from backend.cli.render import ratings_table
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
@click.option("--style-control", is_flag=True, help="Control for answer style as the public arena does (length, "
              "headers, lists, bold in the same regression): every battle needs conv_metadata, or conversation_a "
              "and conversation_b. The style coefficients are printed (with --json, as a note on stderr).")  # fmt: skip
@handle_errors
def ratings(
    battles: str, rounds: int, seed: int, anchor: str | None, as_json: bool, style_control: bool
) -> None:
    """Bradley-Terry ratings (the Arena's scale) of BATTLES: a .json, .jsonl, .csv or .parquet file of
    records with model_a, model_b and winner (model_a, model_b, tie, tie (bothbad)). Warnings go to stderr."""
    from backend.arena.battles import read_battles
    from backend.arena.ratings import fit_ratings
    from backend.arena.style import fit_style_ratings

    pinned = _anchor(anchor)
    read = read_battles(Path(battles), battles, style=style_control)
    fit = (fit_style_ratings if style_control else fit_ratings)(
        read, bootstrap=rounds, seed=seed, anchor=pinned
    )
    for warning in fit.warnings:
        click.echo(f"warning: {warning}", err=True)
    # The coefficients: log-odds of winning per standard deviation of a's style difference from b's.
    coefficients = ", ".join(
        f"{c.feature} {c.coefficient:+.3f}"
        + ("" if c.lower is None or c.upper is None else f" [{c.lower:+.3f}, {c.upper:+.3f}]")
        for c in fit.style or ()
        if c.coefficient is not None
    )
    note = f"style coefficients (log-odds of winning per standard deviation, 95% CI): {coefficients}"
    if fit.style is not None and as_json:
        click.echo(f"note: {note}", err=True)

    def text() -> None:
        console.print(
            ratings_table(fit, f"{Path(battles).name}: {fit.battles:,} battles, {len(fit.models)} models")
        )
        if fit.style is not None:
            console.print(note[0].upper() + note[1:], highlight=False)

    emit(as_json, fit.rows(), text)
