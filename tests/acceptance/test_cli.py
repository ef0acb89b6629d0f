"""The real `leaderboard` command, run as a subprocess against real databases and a local model store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backend.hub.local_store import LocalModelStore
from backend.modelbuilder import build_tiny_model
from tests.commands import clean_env


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    store = LocalModelStore(tmp_path_factory.mktemp("cli-models"))
    build_tiny_model(store, "acme/tiny-chat")
    build_tiny_model(store, "acme/tiny-base", chat_template=False)
    build_tiny_model(store, "acme/no-license", license=None)
    return store


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "backend.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(database_url: str, model_store: LocalModelStore) -> Cli:
    env = clean_env()
    env["LEADERBOARD_DATABASE_URL"] = database_url
    env["LEADERBOARD_MODEL_STORE"] = str(model_store.root)
    return Cli(env)


def test_submit_vote_and_queue(cli, model_store):
    chat = cli.json("submit", "acme/tiny-chat", "--user", "alice", "--model-type", "chat")
    assert chat["status"] == "PENDING" and chat["votes"] == 1 and chat["use_chat_template"] is True
    assert chat["sha"] == model_store.resolve("acme/tiny-chat", "main").sha
    base = cli.json(
        "submit", "acme/tiny-base", "--user", "bob", "--model-type", "pretrained", "--precision", "float16"
    )
    assert base["precision"] == "float16" and base["use_chat_template"] is False
    assert cli.json("vote", str(base["id"]), "--user", "carol") == {"request": base["id"], "votes": 2}
    queue = cli.json("queue")
    assert [r["id"] for r in queue] == [base["id"], chat["id"]]
    assert cli.json("unvote", str(base["id"]), "--user", "carol")["votes"] == 1
    assert [r["id"] for r in cli.json("queue")] == [chat["id"], base["id"]]
    detail = cli.json("show", str(base["id"]))
    assert detail["voters"] == ["bob"]
    assert detail["history"][0]["to_status"] == "PENDING" and detail["history"][0]["actor"] == "bob"
    assert "acme/tiny-base" in cli("queue").stdout  # the table for people


def test_refusals_go_to_stderr_with_a_code_and_a_non_zero_exit(cli):
    refused = cli("submit", "acme/no-license", "--user", "alice", "--model-type", "chat", ok=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error [submission_rejected]: rejected by rule 'license'")
    request = cli.json("submit", "acme/tiny-base", "--user", "alice", "--model-type", "pretrained")
    double = cli("vote", str(request["id"]), "--user", "alice", ok=False)
    assert double.returncode == 1
    assert "error [already_voted]: alice has already voted for request" in double.stderr
    missing = cli("vote", "999", "--user", "bob", ok=False)
    assert missing.returncode == 1 and "error [request_not_found]" in missing.stderr
    usage = cli("submit", "acme/tiny-base", "--user", "alice", "--precision", "fp8", ok=False)
    assert usage.returncode == 2 and "fp8" in usage.stderr
    no_user = cli("vote", "1", "--user", "", ok=False)
    assert no_user.returncode == 1 and "error [invalid_input]" in no_user.stderr
    assert "Traceback" not in refused.stderr + double.stderr + missing.stderr + usage.stderr + no_user.stderr


def test_admin_commands(cli):
    request = cli.json("submit", "acme/tiny-base", "--user", "alice", "--model-type", "pretrained")
    cli("admin", "cancel", str(request["id"]), "--reason", "withdrawn")
    assert cli.json("queue", "--status", "cancelled")[0]["id"] == request["id"]
    again = cli("admin", "cancel", str(request["id"]), ok=False)
    assert again.returncode == 1 and "error [illegal_transition]: request" in again.stderr
    cli("admin", "block", "acme/*", "--reason", "spam")
    refused = cli("submit", "acme/tiny-base", "--user", "alice", "--model-type", "pretrained", ok=False)
    assert "rule 'blocklist'" in refused.stderr
    assert [e["key"] for e in cli.json("admin", "list", "blocklist")] == ["acme/*"]
    cli("admin", "unblock", "acme/*")
    cli("admin", "flag", "acme/tiny-base", "--reason", "contaminated")
    assert cli.json("admin", "list", "flags")[0]["reason"] == "contaminated"
    cli("admin", "official-provider", "add", "acme")
    assert cli.json("admin", "list", "official-providers")[0]["key"] == "acme"
    assert cli.json("admin", "recover") == []


def test_export_and_import_round_trip_in_the_reference_layout(cli, tmp_path, database_url):
    chat = cli.json("submit", "acme/tiny-chat", "--user", "alice", "--model-type", "chat")
    cli("vote", str(chat["id"]), "--user", "bob")
    out = tmp_path / "mirror"
    cli("requests", "export", str(out))
    files = list(out.glob("acme/*.json"))
    assert len(files) == 1 and files[0].name.startswith("tiny-chat_eval_request_False_bfloat16_Original_")
    record = json.loads(files[0].read_text())
    for field in (
        "model",
        "base_model",
        "revision",
        "precision",
        "params",
        "architectures",
        "weight_type",
        "status",
        "submitted_time",
        "model_type",
        "job_id",
        "job_start_time",
        "use_chat_template",
        "sender",
    ):
        assert field in record
    assert record["revision"] == chat["sha"] and record["architectures"] == "LlamaForCausalLM"
    votes = [json.loads(line) for line in (out / "votes_data.jsonl").read_text().splitlines()]
    assert {v["username"] for v in votes} == {"alice", "bob"}

    fresh = Cli({**cli.env, "LEADERBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"})
    report = fresh.json("requests", "import", str(out))
    assert (report["requests_added"], report["votes_added"], report["problems"]) == (1, 2, [])
    imported = fresh.json("queue")
    assert [(r["model"], r["sha"], r["votes"], r["sender"]) for r in imported] == [
        ("acme/tiny-chat", chat["sha"], 2, "alice")
    ]
    again = fresh.json("requests", "import", str(out))
    assert (
        again["requests_added"],
        again["requests_skipped"],
        again["votes_added"],
        again["votes_skipped"],
    ) == (0, 1, 0, 2)


def test_import_reports_each_file_it_refuses_and_imports_the_rest(cli, tmp_path, model_store):
    """Untrusted files: a model id that would leave the export folder, a pending request breaking a
    submission rule, a file whose name holds bytes that are not UTF-8 and a terminal escape. Each is a
    line of the report; the valid pending request is imported; nothing is a traceback."""
    folder = tmp_path / "incoming"
    (folder / "acme").mkdir(parents=True)
    base_sha = model_store.resolve("acme/tiny-base", "main").sha
    record = {
        "revision": "0" * 40,
        "precision": "bfloat16",
        "weight_type": "Original",
        "status": "FINISHED",
        "submitted_time": "2024-06-12T09:13:52Z",
        "model_type": "pretrained",
        "sender": "alice",
    }
    for name, changes in {
        "acme/evil.json": {"model": "../../escaped/pwn"},
        "acme/unlicensed.json": {
            "model": "acme/no-license",
            "revision": model_store.resolve("acme/no-license", "main").sha,
            "status": "PENDING",
        },
        "acme/base.json": {
            "model": "acme/tiny-base",
            "revision": base_sha,
            "status": "RUNNING",
        },
    }.items():
        (folder / name).write_text(json.dumps({**record, **changes}))
    (folder / "acme").joinpath(os.fsdecode(b"odd\xff\x1b[2J.json")).write_text("{")
    result = cli("requests", "import", str(folder), "--user", "admin")
    assert "requests: 1 added, 0 skipped" in result.stdout
    skipped = result.stderr.splitlines()
    assert skipped[0].startswith("skipped acme/evil.json: rule 'repo-id'"), skipped
    assert skipped[1].startswith("skipped acme/odd\\udcff\\x1b[2J.json: not valid JSON"), skipped
    assert skipped[2].startswith("skipped acme/unlicensed.json: not imported, rule 'license'"), skipped
    assert len(skipped) == 3 and "\x1b" not in result.stderr
    report = cli.json("requests", "import", str(folder), "--user", "admin")
    assert (report["requests_added"], report["requests_skipped"], len(report["problems"])) == (0, 1, 3)
    (queued,) = cli.json("queue")
    assert (queued["model"], queued["status"]) == ("acme/tiny-base", "PENDING")
    cli("requests", "export", str(tmp_path / "a" / "out"))
    assert sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*")) == [
        "out",
        "out/acme",
        f"out/acme/tiny-base_eval_request_False_bfloat16_Original_{base_sha[:12]}_{queued['id']}.json",
        "out/votes_data.jsonl",
    ]


def test_settings_and_help(cli):
    rows = cli.json("settings")
    names = {row["name"] for row in rows}
    assert {"LEADERBOARD_DATABASE_URL", "LEADERBOARD_MODEL_STORE", "LEADERBOARD_RESULTS"} <= names
    assert next(r for r in rows if r["name"] == "LEADERBOARD_RATE_LIMIT_COUNT")["value"] == "5"
    assert "LEADERBOARD_DATABASE_URL" in cli("--help").stdout
