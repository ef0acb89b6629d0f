"""Layers call the layer below, never across: the CLI's token commands are served by the services layer,
not by the HTTP API's modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.commands import clean_env

PROBE = """
import sys
from click.testing import CliRunner
from backend.cli.main import cli
runner = CliRunner()
for args in (["admin", "token", "create", "alice"], ["admin", "token", "list", "--json"], ["admin", "token", "revoke", "1"]):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
print(sorted(name for name in sys.modules if name == "backend.api" or name.startswith("backend.api.")))
"""


def test_the_token_commands_never_import_the_http_api(tmp_path: Path) -> None:
    env = clean_env(LEADERBOARD_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}")
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
