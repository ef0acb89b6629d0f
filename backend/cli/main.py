"""`leaderboard`: submit models, vote, follow the queue, administer it.

Every command that lists data takes --json; errors go to stderr as `error [code]: message` with a non-zero
exit status (1 for a refused action, 2 for bad usage).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from backend import __version__, logs
from backend.cli.api import serve, token
from backend.cli.arena import arena
from backend.cli.common import F, console, emit, enum_choice, handle_errors, open_app, settings_help
from backend.cli.data import data
from backend.cli.evaluation import run, scores, worker
from backend.cli.judge import judge
from backend.cli.normalize import normalize
from backend.cli.publish import publish, results
from backend.cli.render import print_detail, queue_table
from backend.cli.rescore import rescore
from backend.cli.scheduler import scheduler
from backend.cli.serving import serve_models
from backend.domain import ModelType, Precision, Status, Submission, WeightType, parse_choice
from backend.settings import get_settings, settings_table


@click.group(epilog=settings_help())
@click.version_option(__version__, prog_name="leaderboard")
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def cli(log_level: str) -> None:
    """An LLM leaderboard backend: submissions, votes and the evaluation queue."""
    logs.configure(log_level)


@cli.command()
@click.argument("model")
@click.option("--user", required=True, help="Your Hub user name (the sender).")
@click.option("--revision", default="main", show_default=True, help="Branch, tag or commit; frozen to a sha.")
@click.option("--precision", type=enum_choice(Precision), default=Precision.BFLOAT16.value, show_default=True)
@click.option(
    "--weight-type", type=enum_choice(WeightType), default=WeightType.ORIGINAL.value, show_default=True
)
@click.option(
    "--base-model", default=None, help="ORG/NAME of the base model (required for Delta and Adapter)."
)
@click.option(
    "--model-type", type=enum_choice(ModelType), default=None, help="How the model was made (required)."
)
@click.option(
    "--chat-template/--no-chat-template",
    default=None,
    help="Evaluate with the tokenizer's chat template. Default: on for chat models, off otherwise.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored request as JSON.")
@handle_errors
def submit(
    model: str,
    user: str,
    revision: str,
    precision: str,
    weight_type: str,
    base_model: str | None,
    model_type: str | None,
    chat_template: bool | None,
    as_json: bool,
) -> None:
    """Submit MODEL (ORG/NAME on the Hub, or in LEADERBOARD_MODEL_STORE) for evaluation."""
    app = open_app()
    request = app.submissions.submit(
        Submission(
            model=model.strip(),
            sender=user,
            revision=revision.strip() or "main",
            precision=Precision(parse_choice(Precision, precision, "precision")),
            weight_type=WeightType(parse_choice(WeightType, weight_type, "weight type")),
            model_type=ModelType(parse_choice(ModelType, model_type, "model type")) if model_type else None,
            base_model=base_model.strip() if base_model else None,
            use_chat_template=chat_template,
        )
    )
    skipped = app.submissions.not_evaluated_on(request)

    def text() -> None:
        console.print(
            f"submitted request {request.id}: {request.model} @ {request.sha} ({request.precision}), "
            f"{request.params_b:g}B parameters, 1 vote"
        )
        for name, reason in skipped.items():
            console.print(f"not evaluated on {name}: {reason}", markup=False)

    emit(as_json, {**asdict(request), "not_evaluated_on": skipped} if skipped else request, text)


@cli.command()
@click.argument("request_id", metavar="REQUEST", type=int)
@click.option("--user", required=True, help="Your Hub user name.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def vote(request_id: int, user: str, as_json: bool) -> None:
    """Upvote a pending REQUEST (one vote per user)."""
    count = open_app().votes.vote(request_id, user)
    emit(
        as_json,
        {"request": request_id, "votes": count},
        lambda: console.print(f"request {request_id}: {count} votes"),
    )


@cli.command()
@click.argument("request_id", metavar="REQUEST", type=int)
@click.option("--user", required=True, help="Your Hub user name.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def unvote(request_id: int, user: str, as_json: bool) -> None:
    """Withdraw your vote from a pending REQUEST."""
    count = open_app().votes.unvote(request_id, user)
    emit(
        as_json,
        {"request": request_id, "votes": count},
        lambda: console.print(f"request {request_id}: {count} votes"),
    )


@cli.command()
@click.option("--status", type=enum_choice(Status), default=Status.PENDING.value, show_default=True)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def queue(status: str, limit: int, offset: int, as_json: bool) -> None:
    """List requests: pending ones ranked by votes, then submission time."""
    wanted = Status(status.upper())
    requests = open_app().queue.page(wanted, limit, offset)
    emit(as_json, requests, lambda: console.print(queue_table(requests, f"{wanted.value.lower()} requests")))


@cli.command()
@click.argument("request_id", metavar="REQUEST", type=int)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show(request_id: int, as_json: bool) -> None:
    """One request with its status history and voters."""
    detail = open_app().queue.detail(request_id)
    emit(as_json, detail, lambda: print_detail(console, detail))


@cli.group()
def admin() -> None:
    """Administer the queue: cancel, requeue, flag, block, official providers."""


def _admin_user(func: F) -> F:
    return click.option("--user", default="admin", show_default=True, help="Who does it (recorded).")(func)


@admin.command()
@click.argument("request_id", metavar="REQUEST", type=int)
@click.option("--reason", default=None)
@_admin_user
@handle_errors
def cancel(request_id: int, reason: str | None, user: str) -> None:
    """Cancel a pending or running REQUEST."""
    request = open_app().admin.cancel(request_id, user, reason)
    console.print(f"request {request.id} is {request.status}")


@admin.command()
@click.argument("request_id", metavar="REQUEST", type=int)
@click.option("--reason", default=None)
@_admin_user
@handle_errors
def requeue(request_id: int, reason: str | None, user: str) -> None:
    """Put a failed REQUEST back in the queue."""
    request = open_app().admin.requeue(request_id, user, reason)
    console.print(f"request {request.id} is {request.status}")


@admin.command()
@click.argument("model")
@click.option("--reason", required=True)
@_admin_user
@handle_errors
def flag(model: str, reason: str, user: str) -> None:
    """Flag MODEL (shown in the leaderboard's Flagged column)."""
    open_app().admin.flag(model, user, reason)
    console.print(f"{model} flagged")


@admin.command()
@click.argument("model")
@handle_errors
def unflag(model: str) -> None:
    """Remove the flag from MODEL."""
    open_app().admin.unflag(model)
    console.print(f"{model} unflagged")


@admin.command()
@click.argument("model")
@click.option("--reason", required=True)
@_admin_user
@handle_errors
def block(model: str, reason: str, user: str) -> None:
    """Refuse submissions of MODEL (ORG/NAME, or ORG/* for a whole namespace), also as a base model."""
    open_app().admin.block(model, user, reason)
    console.print(f"{model} blocked")


@admin.command()
@click.argument("model")
@handle_errors
def unblock(model: str) -> None:
    """Take MODEL off the blocklist."""
    open_app().admin.unblock(model)
    console.print(f"{model} unblocked")


@admin.command("official-provider")
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.argument("namespace")
@_admin_user
@handle_errors
def official_provider(action: str, namespace: str, user: str) -> None:
    """Add or remove NAMESPACE as an official provider (exempt from the submission rate limit)."""
    app = open_app()
    if action == "add":
        app.admin.add_official_provider(namespace, user)
    else:
        app.admin.remove_official_provider(namespace)
    console.print(f"{namespace}: {'added' if action == 'add' else 'removed'}")


@admin.command("list")
@click.argument("which", type=click.Choice(["blocklist", "flags", "official-providers"]))
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def admin_list(which: str, as_json: bool) -> None:
    """Show the blocklist, the flagged models or the official providers."""
    entries = open_app().admin.listing(which)

    def text() -> None:
        for e in entries:
            console.print(f"{e.key}\t{e.added_by}\t{e.added_at:%Y-%m-%d}\t{e.reason or ''}")

    emit(as_json, entries, text)


@admin.command()
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def recover(as_json: bool) -> None:
    """Return running requests whose worker stopped heart-beating to the queue (or fail them)."""
    recovered = open_app().queue.recover_stalled()
    emit(
        as_json,
        recovered,
        lambda: console.print(
            "\n".join(f"request {r.request_id}: {r.status}" for r in recovered) or "nothing stalled"
        ),
    )


@cli.group()
def requests() -> None:
    """Export or import requests and votes in the reference's requests-dataset layout."""


@requests.command("export")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def export_requests(folder: Path) -> None:
    """Write one JSON file per request under FOLDER/<org>/, and the votes as FOLDER/votes_data.jsonl."""
    n_requests, n_votes = open_app().requests_export.export(folder)
    console.print(f"exported {n_requests} requests and {n_votes} votes to {folder}")


@requests.command("import")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@_admin_user
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def import_requests(folder: Path, user: str, as_json: bool) -> None:
    """Import a requests export (safe to repeat: what is already there is skipped)."""
    report = open_app().requests_export.import_(folder, user)

    def text() -> None:
        console.print(
            f"requests: {report.requests_added} added, {report.requests_skipped} skipped; "
            f"votes: {report.votes_added} added, {report.votes_skipped} skipped"
        )
        for problem in report.problems:
            click.echo(f"skipped {problem}", err=True)

    emit(as_json, report, text)


@cli.group()
def db() -> None:
    """The database schema."""


@db.command()
@handle_errors
def upgrade() -> None:
    """Apply every pending migration (the other commands also do, on first use)."""
    app = open_app()
    console.print(f"database at {app.db.engine.url.render_as_string(hide_password=True)} is up to date")


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show_settings(as_json: bool) -> None:
    """Every setting: its environment variable, default, current value and meaning."""
    current = get_settings()
    rows = [
        {
            "name": name,
            "default": default,
            "value": str(getattr(current, name[len("LEADERBOARD_") :].lower())),
            "help": help_,
        }
        for name, default, help_ in settings_table()
    ]

    def text() -> None:
        for row in rows:
            console.print(
                f"[bold]{row['name']}[/bold] = {row['value']}  (default: {row['default'] or 'unset'})"
            )
            console.print(f"    {row['help']}")

    emit(as_json, rows, text)


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".leaderboard/demo"),
    show_default=True,
    help="Folder for the demo's database and model store (emptied first).",
)
@handle_errors
def demo(workdir: Path) -> None:
    """Run the whole workflow on the embedded default with locally built tiny models."""
    from backend.demo import run_demo

    run_demo(workdir, console).close()


# Commands defined in their own modules.
for command in (worker, run, scores, normalize, data, publish, results, rescore, serve, judge, serve_models):
    cli.add_command(command)
admin.add_command(token)
cli.add_command(scheduler)
cli.add_command(arena)


def main() -> None:
    cli(prog_name="leaderboard")
