"""`leaderboard judge`: judged leaderboards, starting with AlpacaEval 2's metrics of an annotations file.

main.py registers it with `cli.add_command(judge)`.
"""

from __future__ import annotations

from pathlib import Path

import click

from backend.cli.common import console, emit, handle_errors


@click.group()
def judge() -> None:
    """Judged leaderboards: a judge's pairwise verdicts (AlpacaEval-format annotations) and their metrics."""


@judge.command("score")
@click.argument("annotations", metavar="ANNOTATIONS.json")
@click.option(
    "--glm-table",
    metavar="PATH",
    default=None,
    help="AlpacaEval's df_gamed.csv (Hub dataset tatsu-lab/alpaca_eval): the instruction difficulties and "
    "gamed baselines of AlpacaEval 2's length-controlled GLM. Without it, a reduced GLM is fitted and the "
    "output says so.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@handle_errors
def score(annotations: str, glm_table: str | None, as_json: bool) -> None:
    """AlpacaEval 2's metrics of ANNOTATIONS.json (one model against one reference), with its key names:
    win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total, discrete_win_rate, avg_length,
    length_controlled_winrate, lc_standard_error."""
    from rich.table import Table
    from rich.text import Text

    from backend.judged.annotations import read_annotations
    from backend.judged.glm import read_glm_table
    from backend.judged.score import score as score_annotations

    records = read_annotations(Path(annotations), annotations)
    table = read_glm_table(Path(glm_table), glm_table) if glm_table is not None else None
    result = score_annotations(records, table).as_dict()

    def text() -> None:
        shown = Table(title=Text(f"{records.generator_2} against {records.generator_1}"))
        shown.add_column("metric")
        shown.add_column("value", justify="right")
        for key, value in result.items():
            if key != "length_controlled_note":
                shown.add_row(key, _shown(value))
        console.print(shown)
        console.print(f"length control: {result['length_controlled_note']}", markup=False)

    emit(as_json, result, text)


@judge.command("import")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--leaderboard",
    default="alpaca_eval_2",
    show_default=True,
    help="The judged leaderboard the results become evaluations of (its annotator's annotations are read).",
)
@click.option(
    "--glm-table",
    metavar="PATH",
    default=None,
    help="df_gamed.csv for the length-controlled win rate (default: the data mirror's, when it has it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def import_(folder: Path, leaderboard: str, glm_table: str | None, as_json: bool) -> None:
    """Import AlpacaEval's results/<model>/ folders (model_outputs.json, <annotator>/annotations.json) as
    evaluations of a judged leaderboard, scored here from the annotations. FOLDER is results/ or one model's
    folder. Importing a file again imports nothing."""
    from backend.cli.common import open_app
    from backend.leaderboards.config import load_judged
    from backend.services.judged_import import JudgedImportService

    config = load_judged(leaderboard)
    with open_app() as app:
        table = Path(glm_table) if glm_table else app.glm_table(config)
        service = JudgedImportService(app.requests, app.evaluations, app.clock, Path(app.settings.work_dir))
        report = service.import_folder(config, folder, table)

    def text() -> None:
        console.print(
            f"{config.name}: {len(report.imported)} imported, {len(report.already)} already imported"
        )
        for name, why in report.skipped:
            console.print(f"  skipped {name}: {why}", markup=False)

    emit(as_json, report.as_dict(), text)


@judge.command("difficulty")
@click.option(
    "--leaderboard", default="alpaca_eval_2", show_default=True, help="A judged leaderboard served here."
)
@click.option("--bootstrap", "rounds", type=click.IntRange(0, 10_000), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
@handle_errors
def difficulty(leaderboard: str, rounds: int, seed: int, as_json: bool) -> None:
    """Instruction difficulty estimated jointly over the leaderboard's models (for instruction sets without
    AlpacaEval's table): each model's difficulty-adjusted win rate, its bootstrap standard error and its rank
    range, and each instruction's difficulty."""
    from dataclasses import asdict

    from rich.table import Table

    from backend.cli.common import open_app
    from backend.errors import InvalidInput
    from backend.services.judged import joint_difficulty

    with open_app() as app:
        board = app.leaderboards.get(leaderboard)
        if board is None or board is app.leaderboard:
            raise InvalidInput(
                f"{leaderboard} is not a judged leaderboard of this deployment (LEADERBOARD_JUDGED: "
                f"{app.settings.judged or 'none'})"
            )
        fit = joint_difficulty(board, rounds, seed)

    def text() -> None:
        shown = Table(title=f"{leaderboard}: difficulty-adjusted win rates ({fit.rounds} bootstrap rounds)")
        for column in ("rank", "model", "win rate", "± se", "ability", "judged"):
            shown.add_column(column)
        for e in fit.models:
            rank = str(e.rank[0]) if e.rank[0] == e.rank[1] else f"{e.rank[0]}–{e.rank[1]}"
            se = "-" if e.standard_error is None else f"{e.standard_error:.2f}"
            shown.add_row(rank, e.model, f"{e.win_rate:.2f}", se, f"{e.ability:.3f}", str(e.judged))
        console.print(shown)

    emit(as_json, asdict(fit), text)


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
