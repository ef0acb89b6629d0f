"""`leaderboard serve-models`: the OpenAI-compatible chat endpoint over the local model store.

main.py registers it: `cli.add_command(serve_models)`.
"""

from __future__ import annotations

import ipaddress
import logging

import click

from backend.cli.common import console, handle_errors
from backend.settings import get_settings


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command("serve-models")
@click.option(
    "--host", default=None, help="Interface to listen on. Default: LEADERBOARD_SERVE_HOST (127.0.0.1)."
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port. Default: LEADERBOARD_SERVE_PORT (8001).",
)
@click.option(
    "--models",
    multiple=True,
    metavar="ORG/NAME[@REVISION]",
    help="A model to serve (repeat it, or separate with commas). Default: LEADERBOARD_SERVE_MODELS, or every "
    "model of LEADERBOARD_MODEL_STORE.",
)
@handle_errors
def serve_models(host: str | None, port: int | None, models: tuple[str, ...]) -> None:
    """Serve models of LEADERBOARD_MODEL_STORE behind an OpenAI-compatible API (GET /v1/models, POST
    /v1/chat/completions with logprobs and streaming): the judge of judged leaderboards, and arena models.

    Models load on first use (transformers, never remote code, safetensors only) and stay loaded
    (LEADERBOARD_SERVE_MAX_LOADED_MODELS). Each completion is logged (model, tokens, seconds; never its text).
    """
    from backend.serving.server import run, serving_app

    settings = get_settings()
    host = host or settings.serve_host
    port = settings.serve_port if port is None else port
    logging.getLogger("backend.serving").setLevel(logging.INFO)
    app, catalog = serving_app(settings, models)
    served = ", ".join(m.id for m in catalog.served()) or "none yet"
    key = "a key (LEADERBOARD_SERVE_API_KEY)" if settings.serve_api_key else "no key"
    console.print(f"serving models on http://{host}:{port}/v1 with {key}: {served}")
    if settings.serve_api_key is None and not _loopback(host):
        click.echo(
            f"warning: {host} is not a loopback address and no LEADERBOARD_SERVE_API_KEY is set: anyone who "
            "reaches it may use the models",
            err=True,
        )
    run(app, host, port)
