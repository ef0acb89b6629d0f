"""The `leaderboard` command as tests run it: a subprocess with an environment free of the caller's
LEADERBOARD_* settings."""

from __future__ import annotations

import os
import subprocess
import sys


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any LEADERBOARD_* setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    env.update(values)
    return env


def leaderboard(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`leaderboard ARGS` in a subprocess with ``env``; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
