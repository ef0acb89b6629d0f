"""The main job on the embedded default, end to end on this machine: build tiny models into a local model
store and a synthesized benchmark data mirror, submit the models, vote, and let the worker evaluate the
top-voted requests with the pinned harness over all six benchmarks and on a judged leaderboard (a local
judge model compares each chat model's answers with a reference's, in both orders, as PandaLM does), and
publish the results; then print both leaderboards and what the results dataset holds.

Everything it writes lives in one folder, created afresh on each run. The models are random, so their scores
sit near the random baselines: the point is the whole path, not the numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from backend.app import App
from backend.cli.render import queue_table, ratings_table, scores_table
from backend.domain import ModelType, Precision, Status, Submission
from backend.errors import LeaderboardError
from backend.hub.local_store import LocalModelStore
from backend.leaderboards.config import CONFIG_DIR
from backend.modelbuilder import build_tiny_model
from backend.settings import Settings

#: The demo's judged leaderboard: pandalm.yaml with a tiny random judge from the model store, short answers.
DEMO_JUDGED = "pandalm_demo"
DEMO_JUDGE = "demo-org/tiny-judge"
#: The demo's arena: two tiny chat models of the store battle live; static battles from the judged leaderboard.
DEMO_ARENA = "arena_demo"
DEMO_ARENA_MODELS = ("demo-org/tiny-chat", "demo-org/tiny-chat-2")


def write_demo_judged_config(folder: Path) -> Path:
    """leaderboard_configs/pandalm.yaml as the demo runs it: its judge a tiny model of the store (PandaLM-7B is
    not here), answers of a few tokens (the models are random)."""
    data = yaml.safe_load((CONFIG_DIR / "pandalm.yaml").read_text(encoding="utf-8"))
    data["name"] = DEMO_JUDGED
    data["title"] = "PandaLM-style judge (demo: a tiny random judge)"
    data["generation"].update(max_new_tokens=16, batch_size=4)
    data["judge"].update(model=DEMO_JUDGE, annotator="tiny_judge", max_new_tokens=1)
    path = folder / f"{DEMO_JUDGED}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_demo_arena_config(folder: Path) -> Path:
    """An arena of the two tiny chat models on the embedded endpoint, with static battles from the demo's
    judged leaderboard (the tiny chat model's stored answers against the reference's)."""
    data = {
        "schema_version": 1,
        "kind": "arena",
        "name": DEMO_ARENA,
        "title": "Arena (demo: two tiny random chat models)",
        "models": [{"name": name, "endpoint": "local"} for name in DEMO_ARENA_MODELS],
        "generation": {"max_tokens": 16, "temperature": 0.7},
        "ratings": {"bootstrap": 100, "seed": 0},
        "static": {"judged": DEMO_JUDGED},
    }
    path = folder / f"{DEMO_ARENA}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run_demo(workdir: Path, console: Console, limit: int = 4) -> App:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    store = LocalModelStore(workdir / "models")
    mirror = workdir / "data-mirror"
    judged_config = write_demo_judged_config(workdir)
    arena_config = write_demo_arena_config(workdir)
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
        judged=str(judged_config),
        arena=str(arena_config),
        arena_ratings_seconds=0,
    )
    console.rule("1. build tiny models into the local model store (Hub cache layout)")
    models: list[tuple[str, dict[str, Any]]] = [
        ("demo-org/tiny-chat", {}),
        ("demo-org/tiny-chat-2", {"seed": 5}),  # not submitted: the arena's second live model
        ("demo-org/tiny-base", {"chat_template": False}),
        ("demo-org/tiny-unlicensed", {"license": None}),
        (DEMO_JUDGE, {"answers": ("1", "2")}),  # always answers "1" or "2": a verdict for every pair
    ]
    for repo_id, options in models:
        sha = build_tiny_model(store, repo_id, **options)
        console.print(f"{repo_id} @ {sha}")

    console.rule("   and synthesize data in the exact schemas of the six datasets and of AlpacaEval's")
    from backend.evaluation.synthetic import synthesize
    from backend.judged.data import load_judged_configs
    from backend.judged.synthetic import synthesize_judged

    synthesize(mirror)
    synthesize_judged(mirror, load_judged_configs([str(judged_config)]), rows=limit)
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
        f"4. the worker claims the top-ranked requests and evaluates them ({limit} documents per subtask, "
        f"{limit} instructions on {DEMO_JUDGED})"
    )
    for _ in range(2):
        finished = app.worker.work_once("demo-worker")
        if finished is None:
            break
        console.print(f"request {finished.id} ({finished.model}): {finished.status}")
        if finished.failure_reason:
            console.print(finished.failure_reason)
        evaluation = app.evaluations.get(finished.id, settings.config)
        if evaluation is not None:
            console.print(
                f"evaluated in {evaluation.duration_seconds:.0f} s; artifacts in {evaluation.artifacts}"
            )
            console.print(f"reproduce with: {evaluation.provenance['command']}")
            for name, reason in (evaluation.provenance.get("judged_skipped") or {}).items():
                console.print(f"not evaluated on {Path(name).stem}: {reason}", markup=False)
        judged = app.evaluations.get(finished.id, DEMO_JUDGED)
        if judged is not None:
            run = judged.provenance["judged"]
            console.print(
                f"{DEMO_JUDGED}: {run['instructions']} answers judged by {run['judge']} in both orders "
                f"({run['judged_anew']} judgements made, {run['from_cache']} from the cache)"
            )
    console.rule("5. the leaderboards: the benchmark one, and the judged one beside it")
    from backend.leaderboards.config import columns

    console.print(scores_table(app.config.name, columns(app.config), app.leaderboard.ranked()))
    board = app.leaderboards[DEMO_JUDGED]
    console.print(
        scores_table(
            f"{DEMO_JUDGED} (win rates against {board.config.reference.generator}, as AlpacaEval defines them)",
            ["win_rate", "standard_error", "length_controlled_winrate", "n_total", "avg_length"],
            board.ranked(),
        )
    )
    console.print(queue_table(app.queue.page(Status.PENDING), "still pending"))

    console.rule("6. the results dataset, published by the worker after the evaluation")
    published = Path(settings.results)
    files = sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file())
    for prefix in ("leaderboard.", "README.md", "results/", "details/", "requests/", "judged/"):
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
    judged_table = load_dataset(
        str(published), DEMO_JUDGED, split="train", cache_dir=str(workdir / "datasets-cache")
    )
    console.print(
        f"datasets.load_dataset({str(published)!r}, {DEMO_JUDGED!r}): {judged_table.num_rows} row(s), columns "
        f"{', '.join(judged_table.column_names[:4])}, ..."
    )
    console.print(f"database: {workdir / 'leaderboard.db'}; model store: {store.root}; data: {mirror}")
    run_arena(app, console)
    console.rule("8. the pages")
    console.print(
        "`make serve-demo` serves this database; its leaderboard is then at http://127.0.0.1:8000/ "
        f"(the judged one at /leaderboards/{DEMO_JUDGED}, the arena at /arena, the queue at /queue, the API "
        "at /docs)",
        markup=False,
    )
    return app


def run_arena(app: App, console: Console, live: int = 3, static: int = 6) -> None:
    """Battles in the arena: ``live`` ones, answered now by the two tiny chat models through the embedded
    endpoint, and ``static`` ones from the judged leaderboard's stored answers. The demo's voters stand in for
    people: every third calls it a tie, the others prefer the longer answer. Then the arena's table."""
    import asyncio

    from backend.services.arena import ArenaService, require

    arena = require(app.arena)
    console.rule(
        f"7. the arena: {live} live battles ({' vs '.join(DEMO_ARENA_MODELS)}, names hidden until the vote) "
        f"and {static} static ones ({DEMO_JUDGED}'s stored answers)"
    )

    async def answer(service: ArenaService, battle_id: int, user: str) -> None:
        for side in "ab":
            async for event in service.answer(battle_id, user, side):
                if event.error:
                    raise LeaderboardError(event.error)

    async def live_battles() -> list[int]:
        started = []
        try:
            for number in range(live):
                view = arena.start(
                    f"voter{number}", "127.0.0.1", f"Demo question {number + 1}: what is a train?"
                )
                await answer(arena, view.id, f"voter{number}")
                started.append(view.id)
        finally:
            if arena.streamer is not None:
                await arena.streamer.aclose()
        return started

    battles = [(f"voter{n}", battle_id) for n, battle_id in enumerate(asyncio.run(live_battles()))]
    for number in range(static):
        user = f"voter{live + number}"
        battles.append((user, arena.start(user, "127.0.0.1", None, mode="static").id))
    for number, (user, battle_id) in enumerate(battles):
        view = arena.battle(battle_id, user)
        turn = view.turns[-1]
        a, b = len(turn.answer_a or ""), len(turn.answer_b or "")
        winner = "tie" if number % 3 == 0 or a == b else "model_a" if a > b else "model_b"
        voted = arena.vote(battle_id, user, winner)
        console.print(
            f"battle {battle_id} ({voted.mode}): {user} voted {winner}; revealed: A = {voted.model_a}, "
            f"B = {voted.model_b}",
            markup=False,
        )
    ratings = arena.ratings()
    if ratings is not None:
        console.print(
            ratings_table(ratings, f"{arena.name}: {ratings.battles} votes, 95% intervals by bootstrap")
        )
        for warning in ratings.warnings:
            console.print(f"warning: {warning}", markup=False)
    report = app.publish_results()
    published = Path(app.settings.results)
    from datasets import load_dataset

    ratings_table_published = load_dataset(
        str(published),
        f"{DEMO_ARENA}_ratings",
        split="train",
        cache_dir=str(published.parent / "datasets-cache"),
    )
    console.print(
        f"published the arena's {report.arena_battles} battles (no voter named) and its ratings: "
        f"datasets.load_dataset({str(published)!r}, {DEMO_ARENA + '_ratings'!r}): "
        f"{ratings_table_published.num_rows} row(s), columns {', '.join(ratings_table_published.column_names)}",
        markup=False,
    )
