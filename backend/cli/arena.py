"""`leaderboard arena`: the arena's Bradley-Terry ratings of a battles file (the public Chatbot Arena's format),
the deployment's battles out and in (export, import), and the suspicious-voter report.

main.py registers it with `cli.add_command(arena)`.
"""

from __future__ import annotations

from pathlib import Path

import click

from backend.app import App
from backend.cli.common import console, emit, handle_errors, open_app
from backend.cli.render import ratings_table
from backend.errors import ArenaNotConfigured, InvalidInput
from backend.services.arena_data import ArenaDataService
from backend.services.arena_report import ReportRules


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


def _arena_data(app: App) -> ArenaDataService:
    data = app.arena_data
    if data is None:
        raise ArenaNotConfigured()
    return data


@arena.command("export")
@click.argument("file", metavar="FILE")
@handle_errors
def export(file: str) -> None:
    """Write every voted battle of the deployment's arena (LEADERBOARD_ARENA) to FILE in the public Chatbot
    Arena's format: .json, .jsonl, .csv or .parquet (the suffix chooses). Records hold question_id, model_a,
    model_b, winner, turn, anony, tstamp, mode and conversation_a/b; never who voted or from where."""
    app = open_app()
    try:
        data = _arena_data(app)
        count = data.export(Path(file), file)
    finally:
        app.close()
    console.print(f"wrote {count:,} battles of the arena {data.name} to {file}")


@arena.command("import")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print {source, read, added, already} as JSON.")
@handle_errors
def import_(file: str, as_json: bool) -> None:
    """Import the battles of FILE (.json, .jsonl, .csv or .parquet, the public Chatbot Arena's format) into
    the deployment's arena as imported battles. The whole file is checked before anything is written; a
    battle imported before is not added again (each record's key is stored), so importing is repeatable."""
    app = open_app()
    try:
        report = _arena_data(app).import_file(Path(file), file)
    finally:
        app.close()

    def text() -> None:
        console.print(
            f"{file}: {report.read:,} battles read, {report.added:,} added, {report.already:,} already there"
        )

    emit(as_json, report, text)


@arena.command("suspicious")
@click.option("--days", type=click.FloatRange(0, 3650, min_open=True), default=30.0, show_default=True,
              help="Votes of the last DAYS days.")  # fmt: skip
@click.option("--min-votes", type=click.IntRange(1), default=ReportRules.min_votes, show_default=True,
              help="Votes a voter needs for the side, tie and speed rules to apply.")  # fmt: skip
@click.option("--side-share", type=click.FloatRange(0, 1, min_open=True), default=ReportRules.side_share,
              show_default=True, help="Share of votes for one side (or ties) that is suspicious.")  # fmt: skip
@click.option("--fast-seconds", type=click.FloatRange(0), default=ReportRules.fast_seconds, show_default=True,
              help="A median time from the answers to the vote under this is suspicious.")  # fmt: skip
@click.option("--shared-address", type=click.IntRange(2), default=ReportRules.shared_address,
              show_default=True, help="Voters sharing one client address that are suspicious.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print a list of {user, votes, share_a, share_b, "
              "share_tie, median_seconds, addresses, reasons}.")  # fmt: skip
@handle_errors
def suspicious(
    days: float, min_votes: int, side_share: float, fast_seconds: float, shared_address: int, as_json: bool
) -> None:
    """The arena's voters whose votes look like abuse (same side, always tie, too fast, shared address),
    from the stored votes, most votes first."""
    from rich.table import Table

    rules = ReportRules(min_votes, side_share, fast_seconds, shared_address)
    app = open_app()
    try:
        voters = _arena_data(app).suspicious(days, rules)
    finally:
        app.close()

    def text() -> None:
        if not voters:
            console.print(f"no suspicious voter in the last {days:g} days")
            return
        shown = Table(title=f"suspicious voters, last {days:g} days")
        for column in ("user", "votes", "A", "B", "tie", "median s", "addresses", "reasons"):
            shown.add_column(column, justify="left" if column in ("user", "reasons") else "right")
        for v in voters:
            median = "-" if v.median_seconds is None else f"{v.median_seconds:.1f}"
            shown.add_row(
                v.user, str(v.votes), f"{v.share_a:.0%}", f"{v.share_b:.0%}", f"{v.share_tie:.0%}", median,
                str(v.addresses), "; ".join(v.reasons),
            )  # fmt: skip
        console.print(shown)

    emit(as_json, voters, text)
