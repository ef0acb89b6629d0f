"""The README's main-job command runs on the embedded default and does what it says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.acceptance.live_api import live_server
from tests.commands import clean_env


@pytest.mark.timeout(1100)
def test_demo_runs_the_whole_loop(tmp_path):
    workdir = tmp_path / "demo"
    env = clean_env()
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "demo", "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # about 75 s alone (two evaluations); several times that beside other slow tests on 2 CPUs
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rejected by rule 'license'" in out and "rejected by rule 'duplicate'" in out
    assert "carol has already voted" in out
    assert "request 2 (demo-org/tiny-base): FINISHED" in out
    assert "reproduce with: leaderboard run demo-org/tiny-base --revision" in out
    # The base model has no chat template: not on the judged leaderboard, the rule named; the chat model is.
    assert "not evaluated on pandalm_demo: rule judged-chat-template" in out
    assert "request 1 (demo-org/tiny-chat): FINISHED" in out
    assert "pandalm_demo: 4 answers judged by demo-org/tiny-judge@" in out
    assert "win rates against gpt4_1106_preview" in out
    # The worker published the result: the dataset loads with datasets.load_dataset.
    assert (workdir / "results" / "leaderboard.parquet").is_file()
    assert len(list((workdir / "results" / "results" / "demo-org" / "tiny-base").glob("results_*.json"))) == 1
    assert "2 row(s) of" in out and "from 'eval_name'" in out
    assert "'pandalm_demo'): 1 row(s), columns name, win_rate" in out
    judged = workdir / "results" / "judged" / "pandalm_demo" / "results" / "demo-org__tiny-chat"
    assert (judged / "model_outputs.json").is_file() and (
        judged / "tiny_judge" / "annotations.json"
    ).is_file()
    # The arena: live battles answered through the embedded endpoint and static ones from the judged
    # leaderboard's stored answers, names revealed by each vote, then the arena's table of all three models.
    revealed = re.findall(
        r"battle \d+ \((live|static)\): voter\d+ voted (\S+); revealed: A = (\S+), B = (\S+)", out
    )
    assert [mode for mode, *_ in revealed] == ["live"] * 3 + ["static"] * 6
    assert all(
        {a, b} == {"demo-org/tiny-chat", "demo-org/tiny-chat-2"} for m, _, a, b in revealed if m == "live"
    )
    assert all(
        {a, b} == {"demo-org/tiny-chat", "gpt4_1106_preview"} for m, _, a, b in revealed if m == "static"
    )
    assert "arena_demo: 9 votes, 95% intervals by bootstrap" in out
    arena_table = out.split("arena_demo: 9 votes", 1)[1]
    assert all(
        name in arena_table for name in ("gpt4_1106_preview", "demo-org/tiny-chat-2", "demo-org/tiny-chat")
    )
    assert "no finite maximum-likelihood" not in out
    assert "published the arena's 9 battles (no voter named) and its ratings" in out
    assert "'arena_demo_ratings'): 3 row(s), columns rank, model, rating" in out
    arena_files = workdir / "results" / "arena" / "arena_demo"
    assert (arena_files / "battles.parquet").is_file() and (arena_files / "ratings.csv").is_file()
    # The state it leaves is a real database the CLI reads.
    env["LEADERBOARD_DATABASE_URL"] = f"sqlite:///{workdir / 'leaderboard.db'}"

    def cli(*args: str) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "backend.cli", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout)

    finished = cli("queue", "--status", "finished")
    assert sorted((r["model"], r["votes"], r["attempts"]) for r in finished) == [
        ("demo-org/tiny-base", 3, 1),
        ("demo-org/tiny-chat", 1, 1),
    ]
    assert cli("queue") == []
    table = cli("scores")
    assert sorted(row["fullname"] for row in table) == ["demo-org/tiny-base", "demo-org/tiny-chat"]
    assert all(0 <= row["Average ⬆️"] <= 100 for row in table)
    assert (workdir / "models" / "models--demo-org--tiny-chat" / "refs" / "main").is_file()

    # It ends by saying where its leaderboard is shown, and `make serve-demo` (its settings read from the
    # Makefile) shows it there: the page lists the evaluated model and links the published results.
    assert "`make serve-demo` serves this database; its leaderboard is then at http://127.0.0.1:8000/" in out
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    recipe = makefile.split("\nserve-demo:", 1)[1].split("\n\n", 1)[0]
    served = dict(re.findall(r"(LEADERBOARD_\w+)=\S*\$\(abspath \$\(DEMO_DIR\)\)(\S*)", recipe))
    assert {"LEADERBOARD_DATABASE_URL", "LEADERBOARD_RESULTS"} <= set(served)
    server_env = clean_env(
        **{
            name: f"{'sqlite:///' if 'DATABASE' in name else ''}{workdir}{suffix}"
            for name, suffix in served.items()
        }
    )
    with live_server(server_env, tmp_path / "serve.log") as server:
        page = httpx.get(f"{server.url}/", timeout=30)
        assert page.status_code == 200 and "demo-org/tiny-base" in page.text
        judged = httpx.get(f"{server.url}/leaderboards/pandalm_demo", timeout=30)
        assert judged.status_code == 200 and "demo-org/tiny-chat" in judged.text
        assert "demo-org/tiny-base" not in judged.text and "win_rate" in judged.text
        listing = httpx.get(f"{server.url}/api/leaderboards", timeout=30).json()
        assert [(b["name"], b["kind"]) for b in listing] == [
            ("open_llm_v2", "benchmark"),
            ("pandalm_demo", "judged"),
        ]
        csv = httpx.get(f"{server.url}/api/results", params={"format": "csv"}, timeout=30)
        assert csv.status_code == 200 and "demo-org/tiny-base" in csv.text
        # The arena it left: its page and its table over the API, the nine votes counted.
        arena_page = httpx.get(f"{server.url}/arena", timeout=30)
        assert arena_page.status_code == 200 and "gpt4_1106_preview" in arena_page.text
        ratings = httpx.get(f"{server.url}/api/arena/ratings", timeout=30).json()
        assert ratings["votes"] == 9
        assert {row["model"] for row in ratings["rows"]} == {
            "demo-org/tiny-chat",
            "demo-org/tiny-chat-2",
            "gpt4_1106_preview",
        }
