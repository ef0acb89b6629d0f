"""The README's main-job command runs on the embedded default and does what it says."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.commands import clean_env


def test_demo_runs_the_whole_loop(tmp_path):
    workdir = tmp_path / "demo"
    env = clean_env()
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "demo", "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=580,  # about a minute alone; several times that beside the other slow tests on 2 CPUs
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rejected by rule 'license'" in out and "rejected by rule 'duplicate'" in out
    assert "carol has already voted" in out
    assert "request 2 (demo-org/tiny-base): FINISHED" in out
    assert "reproduce with: leaderboard run demo-org/tiny-base --revision" in out
    # The worker published the result: the dataset loads with datasets.load_dataset.
    assert (workdir / "results" / "leaderboard.parquet").is_file()
    assert len(list((workdir / "results" / "results" / "demo-org" / "tiny-base").glob("results_*.json"))) == 1
    assert "1 row(s) of" in out and "from 'eval_name'" in out
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
    assert [(r["model"], r["votes"], r["attempts"]) for r in finished] == [("demo-org/tiny-base", 3, 1)]
    assert [r["model"] for r in cli("queue")] == ["demo-org/tiny-chat"]
    table = cli("scores")
    assert [row["fullname"] for row in table] == ["demo-org/tiny-base"]
    assert 0 <= table[0]["Average ⬆️"] <= 100
    assert (workdir / "models" / "models--demo-org--tiny-chat" / "refs" / "main").is_file()
