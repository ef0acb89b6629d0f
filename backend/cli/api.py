"""`leaderboard serve` (the HTTP API) and `leaderboard admin token ...` (its API tokens).

main.py registers them: `cli.add_command(serve)` and `admin.add_command(token)`.
"""

from __future__ import annotations

import logging

import click

from backend.app import App
from backend.cli.common import console, emit, handle_errors, open_app
from backend.services.auth import Authenticator, build_authenticator
from backend.storage.tokens import TokenRepository


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--scheduler/--no-scheduler",
    "with_scheduler",
    default=True,
    show_default=True,
    help="Also run the scheduler (dispatch, collect, publish...) in this process.",
)
@handle_errors
def serve(host: str, port: int, with_scheduler: bool) -> None:
    """Serve the HTTP API (OpenAPI spec at /openapi.json, docs at /docs) on the configured database, with
    the scheduler in the same process (`--no-scheduler`: the API alone, e.g. beside `leaderboard scheduler`).

    Every request is logged (method, path, status, duration, user; never headers or tokens).
    """
    from backend.api.app import create_api
    from backend.api.server import run

    logging.getLogger("backend.api.access").setLevel(logging.INFO)
    app = open_app()
    try:
        background = []
        if with_scheduler:
            from backend.scheduler.service import build_scheduler

            background.append(build_scheduler(app))
        api = create_api(app, background)  # the scheduler starts and stops with the server
        console.print(
            f"serving the leaderboard API on http://{host}:{port} (database: {app.db.engine.url!r}; "
            f"scheduler: {'on' if background else 'off'})"
        )
        run(api, host, port)
    finally:
        app.close()


@click.group()
def token() -> None:
    """API tokens for the HTTP API (air-gapped deployments, scripts, tests)."""


def _auth() -> tuple[App, Authenticator]:
    app = open_app()
    return app, build_authenticator(app.settings, TokenRepository(app.db), app.clock)


@token.command("create")
@click.argument("user")
@click.option("--admin", "is_admin", is_flag=True, help="An admin token (admin endpoints).")
@click.option("--by", "created_by", default="admin", show_default=True, help="Who issues it (recorded).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def create(user: str, is_admin: bool, created_by: str, as_json: bool) -> None:
    """Issue a token for USER and print it: it is shown this once, only its hash is stored."""
    app, auth = _auth()
    try:
        record, secret = auth.create_token(user, is_admin, created_by)
    finally:
        app.close()
    value = {"id": record.id, "user": record.user, "admin": record.is_admin, "token": secret}
    emit(as_json, value, lambda: click.echo(secret))


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def list_tokens(as_json: bool) -> None:
    """Every token issued (prefixes only, never the tokens)."""
    from rich.table import Table

    app, auth = _auth()
    try:
        records = auth.tokens.all()
    finally:
        app.close()

    def text() -> None:
        table = Table()
        for name in ("id", "user", "prefix", "admin", "created by", "created", "revoked"):
            table.add_column(name)
        for r in records:
            revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M") if r.revoked_at else ""
            table.add_row(
                str(r.id), r.user, r.prefix + "…", "yes" if r.is_admin else "", r.created_by,
                r.created_at.strftime("%Y-%m-%d %H:%M"), revoked,
            )  # fmt: skip
        console.print(table)

    emit(as_json, records, text)


@token.command("revoke")
@click.argument("token_id", type=int)
@handle_errors
def revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID: it stops working at once."""
    app, auth = _auth()
    try:
        record = auth.revoke_token(token_id)
    finally:
        app.close()
    console.print(f"revoked token {record.id} of {record.user}")
