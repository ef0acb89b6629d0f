"""The main job on the embedded default, end to end on this machine: build tiny models into a local model
store and a synthesized benchmark data mirror, submit the models, vote, and let the worker evaluate the
top-voted request with the pinned harness over all six benchmarks and publish the result; then print the
leaderboard and what the results dataset holds.

Everything it writes lives in one folder, created afresh on each run. The models are random, so their scores
sit near the random baselines: the point is the whole path, not the numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from backend.app import App
from backend.cli.render import queue_table, scores_table
from backend.domain import ModelType, Precision, Status, Submission
from backend.errors import LeaderboardError
from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings


def run_demo(workdir: Path, console: Console, limit: int = 4) -> App:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    store = LocalModelStore(workdir / "models")
    mirror = workdir / "data-mirror"
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'leaderboard.db'}",
        model_store=store.root,
        data_mirror=mirror,
        work_dir=workdir / "work",
        eval_limit=limit,
        eval_device="auto",
        eval_batch_size="8",  # auto-detection costs more than it saves on a tiny model
        results=str(workdir / "results"),
        publish_after_evaluation=True,
    )
    console.rule("1. build tiny models into the local model store (Hub cache layout)")
    models: list[tuple[str, dict[str, Any]]] = [
        ("demo-org/tiny-chat", {}),
        ("demo-org/tiny-base", {"chat_template": False}),
        ("demo-org/tiny-unlicensed", {"license": None}),
    ]
    for repo_id, options in models:
        sha = build_tiny_model(store, repo_id, **options)
        console.print(f"{repo_id} @ {sha}")

    console.rule("   and synthesize benchmark data in the exact schemas of the six datasets")
    from backend.evaluation.synthetic import synthesize

    synthesize(mirror)
    console.print(f"data mirror: {mirror}")

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

    console.rule(
        f"4. the worker claims the top-ranked request and evaluates it ({limit} documents per subtask)"
    )
    finished = app.worker.work_once("demo-worker")
    if finished is not None:
        console.print(f"request {finished.id} ({finished.model}): {finished.status}")
        if finished.failure_reason:
            console.print(finished.failure_reason)
        evaluation = app.evaluations.get(finished.id, settings.config)
        if evaluation is not None:
            console.print(
                f"evaluated in {evaluation.duration_seconds:.0f} s; artifacts in {evaluation.artifacts}"
            )
            console.print(f"reproduce with: {evaluation.provenance['command']}")
    console.rule("5. the leaderboard")
    from backend.leaderboards.config import columns

    console.print(scores_table(app.config.name, columns(app.config), app.leaderboard.ranked()))
    console.print(queue_table(app.queue.page(Status.PENDING), "still pending"))

    console.rule("6. the results dataset, published by the worker after the evaluation")
    published = Path(settings.results)
    files = sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file())
    for prefix in ("leaderboard.", "README.md", "results/", "details/", "requests/"):
        chosen = [f for f in files if f.startswith(prefix)]
        if chosen:
            console.print(f"{len(chosen):3d} x {chosen[0]}")
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()
    table = load_dataset(str(published), split="train", cache_dir=str(workdir / "datasets-cache"))
    console.print(
        f"datasets.load_dataset({str(published)!r}): {table.num_rows} row(s) of {len(table.column_names)} "
        f"columns, from {table.column_names[0]!r} to {table.column_names[-1]!r}"
    )
    console.print(f"database: {workdir / 'leaderboard.db'}; model store: {store.root}; data: {mirror}")
    console.rule("7. the pages")
    console.print(
        "`make serve-demo` serves this database; its leaderboard is then at http://127.0.0.1:8000/ "
        "(the queue at /queue, the API at /docs)",
        markup=False,
    )
    return app
