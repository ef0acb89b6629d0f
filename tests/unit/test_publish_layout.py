"""Pure pieces of publishing: the reference's formulas and names, the card, targets from the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backend.errors import ConfigurationError
from backend.leaderboards.config import load_config
from backend.publish.files import card, task_of, write_atomic
from backend.publish.table import REFERENCE_COLUMNS, TYPE_LABELS, co2_cost_kg, is_moe, table_columns
from backend.publish.targets import HubDatasetTarget, LocalFolderTarget, target_from_setting
from backend.retry import Backoff


def test_co2_follows_the_reference_formula():
    assert co2_cost_kg(3600) == pytest.approx(5.6 * 269.8 / 1000)
    assert co2_cost_kg(5123.456789012345) == pytest.approx(5123.456789012345 / 3600 * 5.6 * 0.2698)
    assert co2_cost_kg(None) == co2_cost_kg(0) == co2_cost_kg(-5) == co2_cost_kg(float("nan")) == -1


def test_the_table_starts_with_the_reference_columns_then_ours():
    assert len(REFERENCE_COLUMNS) == 36 and len(set(REFERENCE_COLUMNS)) == 36
    names = table_columns(load_config("open_llm_v2"))
    assert names[:36] == list(REFERENCE_COLUMNS)
    assert len(names) == len(set(names))
    assert "Average ⬆️ stderr" in names[36:]


def test_every_model_type_has_the_reference_emoji():
    assert {emoji for emoji, _ in TYPE_LABELS.values()} == {"🟢", "🟩", "🔶", "💬", "🤝"}
    assert all(label.startswith(emoji + " ") for emoji, label in TYPE_LABELS.values())


def test_moe_from_architecture_names():
    assert is_moe(("MixtralForCausalLM",)) and is_moe(("Qwen2MoeForCausalLM",))
    assert not is_moe(("LlamaForCausalLM",)) and not is_moe(())


def test_task_of_a_samples_file():
    assert task_of("/x/samples_leaderboard_bbh_navigate_2024-06-26T19-26-01.581826.jsonl") == (
        "leaderboard_bbh_navigate"
    )


def test_card_configs_name_the_table_and_each_details_config():
    v1 = "details/org__m/task_a/bfloat16_2026-01-01T12-00-00.000001.parquet"
    v2 = "details/org__m/task_a/bfloat16_2026-02-03T04-05-06.000007.parquet"
    other = "details/org__m/task_b/bfloat16_2026-01-01T12-00-00.000001.parquet"
    text = card(
        "T", "open_llm_v2", [("org/m", "task_a", v1), ("org/m", "task_b", other), ("org/m", "task_a", v2)]
    )
    front = yaml.safe_load(text.decode().split("---\n")[1])
    configs = {c["config_name"]: c for c in front["configs"]}
    assert list(configs) == ["default", "details_org__m__task_a", "details_org__m__task_b"]
    assert configs["default"]["data_files"] == [{"split": "train", "path": "leaderboard.parquet"}]
    # One split per published version, named by its time, and "latest": the newest version only.
    assert configs["details_org__m__task_a"]["data_files"] == [
        {"split": "2026_01_01T12_00_00.000001", "path": [v1]},
        {"split": "2026_02_03T04_05_06.000007", "path": [v2]},
        {"split": "latest", "path": [v2]},
    ]
    assert configs["details_org__m__task_b"]["data_files"][-1] == {"split": "latest", "path": [other]}


def test_atomic_write_skips_identical_content_and_leaves_no_temp_files(tmp_path: Path):
    path = tmp_path / "a" / "b.json"
    assert write_atomic(path, b"1") is True
    assert write_atomic(path, b"1") is False
    assert write_atomic(path, b"2") is True
    assert path.read_bytes() == b"2" and [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_target_from_the_results_setting(tmp_path: Path):
    local = target_from_setting(str(tmp_path / "out"))
    assert isinstance(local, LocalFolderTarget) and local.key == str((tmp_path / "out").resolve())
    hub = target_from_setting("hf://datasets/org/results")
    assert isinstance(hub, HubDatasetTarget) and hub.key == "hf://datasets/org/results"
    with pytest.raises(ConfigurationError):
        target_from_setting("hf://models/org/results")


def test_retry_backoff_is_exponential_and_bounded():
    policy = Backoff(attempts=6, base_s=2, max_s=10)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_network_errors_are_transient_and_other_errors_are_not():
    import httpx2

    from backend.publish.targets import is_transient

    assert is_transient(httpx2.ConnectError("refused"))
    assert is_transient(TimeoutError())
    assert not is_transient(ValueError("invalid README metadata"))


def test_the_publish_retry_policy_comes_from_settings(tmp_path: Path):
    from backend.app import App
    from backend.settings import Settings
    from backend.storage.database import Database

    settings = Settings(
        results="hf://datasets/org/results",
        publish_retry_attempts=7,
        publish_retry_base_seconds=0.5,
        publish_retry_max_seconds=3.0,
    )
    app = App(settings=settings, db=Database(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    target = app.results_target()
    assert isinstance(target, HubDatasetTarget) and target.key == "hf://datasets/org/results"
    assert target.retry == Backoff(attempts=7, base_s=0.5, max_s=3.0)
    assert [target.retry.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    app.close()
