"""What every `leaderboard` command shares: the console, the one error rendering, --json output."""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from backend.app import App
from backend.cli.render import to_json
from backend.errors import LeaderboardError
from backend.settings import get_settings, settings_table

F = TypeVar("F", bound=Callable[..., Any])
# Piped output is not cut to 80 columns: rows stay whole for grep and for people reading logs.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def settings_help() -> str:
    rows = "\n".join(f"  {name} (default: {default or 'unset'})" for name, default, _ in settings_table())
    return "Settings (environment variables; `leaderboard settings` explains each):\n\n\b\n" + rows


def open_app() -> App:
    return App.open(get_settings())


def handle_errors(func: F) -> F:
    """Render every LeaderboardError the same way: on stderr, with its code, exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LeaderboardError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def enum_choice(enum_type: type[enum.Enum]) -> click.Choice:
    return click.Choice([m.value for m in enum_type], case_sensitive=False)


def emit(as_json: bool, value: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(to_json(value))
    else:
        text()
