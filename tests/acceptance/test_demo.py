"""The README's main-job command runs on the embedded default and does what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_runs_the_queue_workflow(tmp_path):
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "demo", "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rejected by rule 'license'" in out and "rejected by rule 'duplicate'" in out
    assert "carol has already voted" in out
    assert "demo-worker holds request 2 (demo-org/tiny-base), attempt 1" in out
    # The state it leaves is a real database the CLI reads.
    env["LEADERBOARD_DATABASE_URL"] = f"sqlite:///{workdir / 'leaderboard.db'}"
    queue = subprocess.run(
        [sys.executable, "-m", "backend.cli", "queue", "--status", "running", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    running = json.loads(queue.stdout)
    assert [(r["model"], r["votes"], r["worker_id"]) for r in running] == [
        ("demo-org/tiny-base", 3, "demo-worker")
    ]
    assert (workdir / "models" / "models--demo-org--tiny-chat" / "refs" / "main").is_file()
