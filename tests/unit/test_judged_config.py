"""A judged leaderboard is a config: alpaca_eval_2.yaml and pandalm.yaml, strictly validated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backend.errors import LeaderboardConfigError
from backend.judged.config import METRICS, JudgedConfig, JudgeKind, JudgePrompt, judged_config_hash
from backend.leaderboards.config import CONFIG_DIR, load_config, load_leaderboard


def _write(tmp_path: Path, change) -> Path:
    data = yaml.safe_load((CONFIG_DIR / "alpaca_eval_2.yaml").read_text())
    change(data)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_alpaca_eval_2_is_alpaca_eval_s_setup() -> None:
    config = load_leaderboard("alpaca_eval_2")
    assert isinstance(config, JudgedConfig)
    assert config.instructions.dataset.repo == "tatsu-lab/alpaca_eval"
    assert (config.instructions.dataset.config, config.instructions.dataset.split) == ("alpaca_eval", "eval")
    assert config.reference.dataset.config == "alpaca_eval_gpt4_baseline"
    assert config.reference.generator == "gpt4_1106_preview"
    assert config.judge.kind is JudgeKind.ENDPOINT
    assert config.judge.prompt is JudgePrompt.WEIGHTED_ALPACA_EVAL_GPT4_TURBO
    assert (config.judge.max_new_tokens, config.judge.top_logprobs) == (1, 5)
    assert config.scoring.length_controlled == "length_controlled_v1"
    assert config.scoring.glm_table is not None and config.scoring.glm_table.filename == "df_gamed.csv"
    assert set(config.columns) == set(METRICS) and config.scoring.sort == "length_controlled_winrate"


def test_pandalm_judges_locally_in_both_orders() -> None:
    config = load_leaderboard("pandalm")
    assert isinstance(config, JudgedConfig)
    assert config.judge.kind is JudgeKind.LOCAL and config.judge.both_orders
    assert config.judge.model == "WeOpenML/PandaLM-7B-v1" and config.judge.temperature == 0
    assert config.scoring.length_controlled == "length_controlled_minimal"


def test_a_judged_config_is_not_a_task_set_leaderboard() -> None:
    with pytest.raises(LeaderboardConfigError, match="judged leaderboard"):
        load_config("alpaca_eval_2")


def test_the_hash_follows_what_scores(tmp_path: Path) -> None:
    base = judged_config_hash(load_leaderboard("alpaca_eval_2"))  # type: ignore[arg-type]
    changed = _write(tmp_path, lambda d: d["generation"].update(max_new_tokens=100))
    assert judged_config_hash(load_leaderboard(str(changed))) != base  # type: ignore[arg-type]
    same = _write(tmp_path, lambda d: None)
    assert judged_config_hash(load_leaderboard(str(same))) == base  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(extra=1), r"field 'extra': unknown field"),
        (lambda d: d["generation"].update(chat_template="optional"), r"generation.chat_template.*required"),
        (lambda d: d["generation"].update(temperature=0.7), r"generation.temperature.*greedy"),
        (lambda d: d["generation"].update(stop=["x" * 65]), r"generation.stop\[0\]"),
        (lambda d: d["instructions"]["dataset"].update(revision="abc"), r"40-character commit sha"),
        (lambda d: d["instructions"]["dataset"].update(repo="../etc"), r"not a Hub dataset id"),
        (lambda d: d["judge"].update(top_logprobs=None), r"reads logprobs"),
        (lambda d: d["judge"].update(kind="oracle"), r"judge.kind.*endpoint, local"),
        (lambda d: d["scoring"].update(glm_table=None), r"needs its table"),
        (lambda d: d["scoring"].update(sort="elo"), r"not a published column"),
        (lambda d: d.update(columns=["win_rate", "win_rate"]), r"twice"),
        (lambda d: d.update(columns=["elo"]), r"AlpacaEval's metrics"),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(LeaderboardConfigError, match=message):
        load_leaderboard(str(_write(tmp_path, change)))


def test_a_name_in_a_path_may_not_end_in_a_newline(tmp_path: Path) -> None:
    """The annotator names a published folder: '$' would let a trailing newline through."""
    path = _write(tmp_path, lambda d: d["judge"].update(annotator="weighted\n"))
    with pytest.raises(LeaderboardConfigError, match=r"judge\.annotator"):
        load_leaderboard(path)
