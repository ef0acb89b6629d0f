"""`leaderboard worker`, `leaderboard run` and `leaderboard scores`: evaluation from the command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from backend.cli.common import console, emit, enum_choice, handle_errors, open_app
from backend.cli.render import scores_table
from backend.domain import Precision, WeightType, parse_choice
from backend.errors import LeaderboardError


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@click.command()
@click.option("--once", is_flag=True, help="Evaluate at most one request, then exit.")
@click.option(
    "--worker-id", default=None, help="Name of this worker in leases and history (default host-pid)."
)
@handle_errors
def worker(once: bool, worker_id: str | None) -> None:
    """Claim the top-voted request, evaluate it with the pinned harness, store the scores; repeat."""
    app = open_app()
    try:
        app.judged_configs  # noqa: B018 (a bad LEADERBOARD_JUDGED is refused before any request is claimed)
    except LeaderboardError:
        app.close()
        raise
    worker_id = worker_id or _default_worker_id()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        if once:
            request = app.worker.work_once(worker_id)
            if request is None:
                console.print("the queue is empty")
            else:
                console.print(f"request {request.id} ({request.model}): {request.status}")
                if request.failure_reason:
                    console.print(request.failure_reason.splitlines()[0])
        else:
            console.print(
                f"worker {worker_id} polling every {app.settings.worker_poll_seconds:g} s (Ctrl-C stops)"
            )
            app.worker.work_forever(worker_id, threading.Event())
    except KeyboardInterrupt:
        console.print("stopped")


@click.command("run")
@click.argument("model")
@click.option("--revision", default="main", show_default=True)
@click.option("--precision", type=enum_choice(Precision), default=Precision.BFLOAT16.value, show_default=True)
@click.option(
    "--weight-type", type=enum_choice(WeightType), default=WeightType.ORIGINAL.value, show_default=True
)
@click.option("--base-model", default=None)
@click.option("--chat-template/--no-chat-template", default=False, show_default=True)
@click.option(
    "--config", "leaderboard", default=None, help="Leaderboard config (default LEADERBOARD_CONFIG)."
)
@click.option("--limit", type=int, default=None, help="Documents per subtask (default: all).")
@click.option(
    "--judged",
    multiple=True,
    help="A judged leaderboard to evaluate on too (repeat for several; default LEADERBOARD_JUDGED).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@handle_errors
def run(
    model: str,
    revision: str,
    precision: str,
    weight_type: str,
    base_model: str | None,
    chat_template: bool,
    leaderboard: str | None,
    limit: int | None,
    judged: tuple[str, ...],
    out: Path | None,
) -> None:
    """Evaluate MODEL exactly as the worker would, outside the queue; print the published columns as JSON.

    This is the reproduction command recorded with every result."""
    from backend.evaluation.runner import RunSpec
    from backend.judged.config import METRICS
    from backend.judged.score import judged_scores
    from backend.leaderboards.config import load_config
    from backend.leaderboards.harness_results import read_results_file
    from backend.leaderboards.normalize import normalize

    app = open_app()
    settings = app.settings
    resolved = app.model_source.resolve(model, revision)
    leaderboard = leaderboard or settings.config
    folder = (
        out or Path(settings.work_dir) / "manual-runs" / f"{model.replace('/', '__')}-{resolved.sha[:12]}"
    ).resolve()
    run_settings = app.worker.run_settings(folder, "attempt")
    run_settings["leaderboard"] = leaderboard
    if limit is not None:
        run_settings["limit"] = limit
    if judged:
        run_settings["judged"] = judged
    spec = RunSpec(
        model=model,
        sha=resolved.sha,
        precision=parse_choice(Precision, precision, "precision").value,
        weight_type=parse_choice(WeightType, weight_type, "weight type").value,
        base_model=base_model,
        use_chat_template=chat_template,
        **run_settings,
    )
    Path(spec.cache_path).parent.mkdir(parents=True, exist_ok=True)
    result = app.worker.runner.run(spec, Path(spec.output_dir))
    if not result.ok:
        assert result.failure is not None
        raise LeaderboardError(f"{result.failure.reason} (log: {result.log_path})")
    scores: dict[str, Any] = normalize(
        read_results_file(Path(result.outcome["results_file"])), load_config(leaderboard)
    )
    for name, part in (result.outcome.get("judged") or {}).items():
        if part.get("skipped"):
            scores[name] = {"skipped": part["skipped"]}
            continue
        glm = part.get("glm_table_file")
        found = judged_scores(Path(part["annotations_file"]), Path(glm) if glm else None)
        scores[name] = {key: found[key] for key in (*METRICS, "length_controlled_glm")}
    click.echo(json.dumps(scores, indent=2, ensure_ascii=False))


@click.command()
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def scores(as_json: bool) -> None:
    """The leaderboard: every evaluated model with its scores, best average first (--json: every column of
    the published table)."""
    from backend.leaderboards.config import columns

    app = open_app()
    config = app.config
    rows = app.leaderboard.ranked()
    title = f"{config.name}: {len(rows)} models"
    emit(as_json, rows, lambda: console.print(scores_table(title, columns(config), rows)))
