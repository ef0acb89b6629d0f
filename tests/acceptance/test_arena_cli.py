"""`leaderboard arena export|import|suspicious` and `leaderboard publish` with an arena, as the real command
in a subprocess, on SQLite and PostgreSQL. The votes are cast in this process through the arena service
(its models answer through an honest fake endpoint), at times set by the test's clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.app import App
from backend.settings import Settings
from tests.commands import clean_env, leaderboard
from tests.conftest import _postgres_schema_url
from tests.integration.conftest import Clock
from tests.integration.test_arena_data import vote
from tests.integration.test_arena_service import service

CONFIG = """schema_version: 1
kind: arena
name: test_arena
title: The test arena
models: []
ratings: {bootstrap: 10, seed: 1}
"""


@pytest.fixture
def other_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
    else:
        yield from _postgres_schema_url()


def run(env: dict[str, str], *args: str, ok: bool = True) -> tuple[str, str]:
    result = leaderboard(env, *args, timeout=180)
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_export_import_report_and_publish_through_the_command(
    database_url: str, other_url: str, tmp_path: Path
) -> None:
    import datasets

    clock = Clock()
    clock.now = datetime.now(UTC) - timedelta(days=1)  # the command's report reads the last 30 days
    with App.open(Settings(database_url=database_url)) as app:
        app.clock = clock
        arena = service(app, clock)
        for i in range(6):
            vote(arena, clock, "always-a-voter", "model_a")
            vote(arena, clock, "honest-voter", ["model_a", "model_b", "tie"][i % 3], think=40)
    config = tmp_path / "test_arena.yaml"
    config.write_text(CONFIG)
    results = tmp_path / "results"
    env = clean_env(
        LEADERBOARD_DATABASE_URL=database_url, LEADERBOARD_ARENA=str(config), LEADERBOARD_RESULTS=str(results)
    )

    out, _ = run(env, "arena", "export", "battles.parquet")
    assert "wrote 12 battles of the arena test_arena to battles.parquet" in out
    elsewhere = {**env, "LEADERBOARD_DATABASE_URL": other_url}
    first, _ = run(elsewhere, "arena", "import", "battles.parquet", "--json")
    assert json.loads(first) == {"source": "battles.parquet", "read": 12, "added": 12, "already": 0}
    again, _ = run(elsewhere, "arena", "import", "battles.parquet")
    assert "12 battles read, 0 added, 12 already there" in again
    run(elsewhere, "arena", "export", "back.jsonl")
    back = [json.loads(line) for line in (tmp_path / "work" / "back.jsonl").read_text().splitlines()]
    assert len(back) == 12 and {r["mode"] for r in back} == {"imported"}

    report, _ = run(env, "arena", "suspicious", "--json", "--min-votes", "5")
    assert [(v["user"], v["reasons"]) for v in json.loads(report)] == [
        ("always-a-voter", ["same-side: 100% of 6 votes for side A"])
    ]
    assert "always-a-voter" in run(env, "arena", "suspicious", "--min-votes", "5")[0]

    published, _ = run(env, "publish", "--json")
    assert json.loads(published)["arena_battles"] == 12
    assert "up to date" in run(env, "publish")[0]
    battles = datasets.load_dataset(str(results), "test_arena_battles", split="train")
    ratings = datasets.load_dataset(str(results), "test_arena_ratings", split="train")
    assert battles.num_rows == 12 and ratings.num_rows == 3
    for path in [p for p in results.rglob("*") if p.is_file()] + [tmp_path / "work" / "battles.parquet"]:
        data = path.read_bytes()
        assert b"always-a-voter" not in data and b"honest-voter" not in data, path


def test_refusals_and_a_deployment_without_an_arena(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "test_arena.yaml"
    config.write_text(CONFIG)
    env = clean_env(LEADERBOARD_DATABASE_URL=database_url, LEADERBOARD_ARENA=str(config))
    bad = tmp_path / "work" / "bad.json"
    bad.write_text(json.dumps([{"model_a": "a", "model_b": "b", "winner": "tie", "anony": "yes"}]))
    _, err = run(env, "arena", "import", "bad.json", ok=False)
    assert err.startswith(
        "error [battles_invalid]: bad.json: record 0: anony is 'yes', not true or false. Fix: write anony as true"
    )
    _, err = run(env, "arena", "export", "battles.txt", ok=False)
    assert "error [invalid_input]: battles.txt: the format is chosen by the suffix" in err
    plain = clean_env(LEADERBOARD_DATABASE_URL=database_url)
    for args in (("export", "x.json"), ("import", "bad.json"), ("suspicious",)):
        _, err = run(plain, "arena", *args, ok=False)
        assert err.startswith("error [arena_not_configured]: This deployment serves no arena"), err
