"""The main job on the embedded default, end to end on this machine: build tiny models into a local model
store, submit them, vote, show the ranked queue, and let a worker claim the top request.

It grows with the project: once evaluation lands, the claimed request is evaluated and the leaderboard
printed. Everything it writes lives in one folder, created afresh on each run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from backend.app import App
from backend.cli.render import queue_table
from backend.domain import ModelType, Precision, Status, Submission
from backend.errors import LeaderboardError
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings


def run_demo(workdir: Path, console: Console) -> App:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    store = LocalModelStore(workdir / "models")
    settings = Settings(database_url=f"sqlite:///{workdir / 'leaderboard.db'}", model_store=store.root)
    console.rule("1. build tiny models into the local model store (Hub cache layout)")
    models: list[tuple[str, dict[str, Any]]] = [
        ("demo-org/tiny-chat", {}),
        ("demo-org/tiny-base", {"chat_template": False}),
        ("demo-org/tiny-unlicensed", {"license": None}),
    ]
    for repo_id, options in models:
        sha = build_tiny_model(store, repo_id, **options)
        console.print(f"{repo_id} @ {sha}")

    app = App.open(settings)
    console.rule("2. submit (every check runs: safetensors headers, config and tokenizer, card, license...)")
    submissions = [
        Submission("demo-org/tiny-chat", sender="alice", model_type=ModelType.CHAT),
        Submission(
            "demo-org/tiny-base", sender="bob", model_type=ModelType.PRETRAINED, precision=Precision.FLOAT16
        ),
        Submission("demo-org/tiny-unlicensed", sender="mallory", model_type=ModelType.FINE_TUNED),
        Submission("demo-org/tiny-chat", sender="eve", model_type=ModelType.CHAT),  # a duplicate
    ]
    for submission in submissions:
        try:
            request = app.submissions.submit(submission)
            console.print(
                f"accepted: request {request.id} {request.model} ({request.precision}, {request.params_b:g}B "
                f"parameters, chat template {'on' if request.use_chat_template else 'off'})"
            )
        except LeaderboardError as exc:
            console.print(f"[red]refused[/red] {submission.model} from {submission.sender}: {exc.message}")

    console.rule("3. the community votes; the queue is ranked by votes, then submission time")
    base = next(r for r in app.queue.page(Status.PENDING) if r.model == "demo-org/tiny-base")
    for user in ("carol", "dave"):
        app.votes.vote(base.id, user)
        console.print(f"{user} voted for request {base.id}")
    try:
        app.votes.vote(base.id, "carol")
    except LeaderboardError as exc:
        console.print(f"[red]refused[/red] second vote: {exc.message}")
    console.print(queue_table(app.queue.page(Status.PENDING), "pending requests"))

    console.rule("4. a worker claims the top-ranked request under a lease")
    claimed = app.queue.claim("demo-worker")
    if claimed is not None:
        app.queue.heartbeat(claimed.id, "demo-worker")
        console.print(f"demo-worker holds request {claimed.id} ({claimed.model}), attempt {claimed.attempts}")
    console.print(queue_table(app.queue.page(Status.RUNNING), "running requests"))
    console.print(f"database: {workdir / 'leaderboard.db'}; model store: {store.root}")
    console.print(
        "Try: LEADERBOARD_DATABASE_URL=sqlite:///" + str(workdir / "leaderboard.db") + " leaderboard queue"
    )
    return app
