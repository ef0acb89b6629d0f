"""Arena configs load strictly: every refusal names the file and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.arena.config import LOCAL, load_arena, parse_arena_config
from backend.errors import LeaderboardConfigError
from backend.leaderboards.config import load_leaderboard


def config(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "kind": "arena",
        "name": "mine",
        "models": [
            {"name": "org/a", "endpoint": "local"},
            {
                "name": "gpt-4-0613",
                "endpoint": "https://vllm.example:8000/v1/",
                "model": "m",
                "api_key_env": "KEY",
            },
        ],
    }
    data.update(changes)
    return data


def test_the_template_loads_and_offers_static_battles_only() -> None:
    arena = load_arena("arena")
    assert arena.name == "arena" and arena.models == () and arena.static_from == "alpaca_eval_2"
    assert (arena.ratings.bootstrap, arena.ratings.seed, arena.ratings.anchor) == (100, 0, None)
    with pytest.raises(LeaderboardConfigError, match="serve it with LEADERBOARD_ARENA"):
        load_leaderboard("arena")


def test_a_roster_with_local_and_remote_endpoints() -> None:
    arena = parse_arena_config(config(ratings={"anchor": {"model": "org/a", "rating": 1114}}), "x.yaml")
    local, remote = arena.models
    assert (local.endpoint, local.model, local.is_local) == (LOCAL, "org/a", True)
    assert (remote.endpoint, remote.model, remote.api_key_env) == ("https://vllm.example:8000/v1", "m", "KEY")
    assert arena.model("gpt-4-0613") is remote and arena.model("nope") is None
    assert arena.ratings.anchor == ("org/a", 1114.0)
    assert (arena.generation.max_tokens, arena.generation.temperature) == (512, 0.7)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "judged"}, "field 'kind': must be arena"),
        ({"surprise": 1}, "field 'surprise': unknown field"),
        ({"models": [{"name": "a b", "endpoint": "local"}]}, "field 'models[0].name'"),
        ({"models": [{"name": "a", "endpoint": "ftp://x/v1"}]}, "field 'models[0].endpoint'"),
        ({"models": [{"name": "a", "endpoint": "http://x:8000"}]}, "ending in /v1"),
        ({"models": [{"name": "a", "endpoint": "local", "api_key_env": "K"}]}, "needs no key"),
        ({"models": [{"name": "a", "endpoint": "local"}] * 2}, "'a' is in the roster twice"),
        ({"models": {"a": 1}}, "field 'models': must be a list"),
        ({"generation": {"temperature": 3}}, "generation.temperature': must be between 0 and 2"),
        ({"generation": {"max_tokens": 0}}, "generation.max_tokens': must be >= 1"),
        ({"ratings": {"bootstrap": -1}}, "ratings.bootstrap"),
        ({"ratings": {"anchor": {"model": "a"}}}, "ratings.anchor.rating': is required"),
        ({"static": {"judged": "Not A Name"}}, "static.judged"),
    ],
)
def test_refusals_name_the_field(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(LeaderboardConfigError, match=f"x.yaml: .*{re.escape(problem)}"):
        parse_arena_config(config(**changes), "x.yaml")


def test_a_config_is_found_by_path_and_its_name_must_match_a_bare_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config()))
    assert load_arena(str(path)).name == "mine"
    with pytest.raises(LeaderboardConfigError, match="no leaderboard config named 'nope'"):
        load_arena("nope")
    with pytest.raises(LeaderboardConfigError, match="not a leaderboard name"):
        load_arena("Bad Name")
    with pytest.raises(LeaderboardConfigError, match="not an arena"):
        load_arena("pandalm")
