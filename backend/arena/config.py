"""An arena is a config: which models battle, where each answers, how they generate, and which judged
leaderboard's stored answers give static battles.

``leaderboard_configs/<name>.yaml`` with ``kind: arena`` (or a path; LEADERBOARD_ARENA names the one a
deployment serves). Each model answers through an OpenAI-compatible chat endpoint: ``local`` is the embedded
endpoint over LEADERBOARD_MODEL_STORE (backend.serving, in the server's own process), anything else the
``/v1`` base URL of a server such as vLLM, with its key read from the environment variable the config names
(never written in the file). Loading is as strict as every other config: unknown fields, duplicate keys and
wrong types are refused with a LeaderboardConfigError naming the file and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import LeaderboardConfigError
from backend.leaderboards.config import ARENA_KIND, check_config_name, read_config
from backend.manifests import Fields, describe

SCHEMA_VERSION = 1
KIND = ARENA_KIND
#: The embedded endpoint (backend.serving over the local model store, in this process).
LOCAL = "local"
MAX_MODELS = 500
MAX_NEW_TOKENS = 32_768

_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
#: A model's name in battles and ratings: what the public arena's files hold (gpt-4-0613, ORG/NAME...).
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/@:+]{0,255}$")
_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


@dataclass(frozen=True)
class ArenaModel:
    """One model of the roster: ``name`` is what voters see after the vote and what ratings use."""

    name: str
    endpoint: str  # LOCAL, or an OpenAI-compatible base URL ending in /v1
    model: str  # the endpoint's model id (for the local endpoint: ORG/NAME or ORG/NAME@REVISION)
    api_key_env: str | None  # the environment variable holding the endpoint's key

    @property
    def is_local(self) -> bool:
        return self.endpoint == LOCAL


@dataclass(frozen=True)
class ArenaGeneration:
    """How every model of the arena answers (the same for all, so that battles are fair)."""

    max_tokens: int
    temperature: float
    top_p: float | None
    system_prompt: str | None


@dataclass(frozen=True)
class ArenaRatings:
    """How the arena's table is rated: bootstrap rounds, seed, and an optional anchored model."""

    bootstrap: int
    seed: int
    anchor: tuple[str, float] | None


@dataclass(frozen=True)
class ArenaConfig:
    name: str
    title: str
    models: tuple[ArenaModel, ...]
    generation: ArenaGeneration
    ratings: ArenaRatings
    static_from: str | None  # a judged leaderboard whose stored answers give static battles
    source: str

    def model(self, name: str) -> ArenaModel | None:
        return next((m for m in self.models if m.name == name), None)


def load_arena(name_or_path: str | Path) -> ArenaConfig:
    """An arena config by bare name (leaderboard_configs/<name>.yaml) or path."""
    path, bare, data = read_config(name_or_path)
    if not is_arena(data):
        raise LeaderboardConfigError(
            f"{path}: not an arena (kind: {KIND}); LEADERBOARD_ARENA names an arena config"
        )
    config = parse_arena_config(data, source=str(path))
    check_config_name(path, bare, config.name)
    return config


def is_arena(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def parse_arena_config(data: Any, source: str = "<config>") -> ArenaConfig:
    f = Fields(source, LeaderboardConfigError)
    top = f.mapping(
        data, "", ("schema_version", "kind", "name", "models"), ("title", "generation", "ratings", "static")
    )
    if top["schema_version"] != SCHEMA_VERSION or isinstance(top["schema_version"], bool):
        raise f.fail("schema_version", f"must be {SCHEMA_VERSION} for an arena")
    if top["kind"] != KIND:
        raise f.fail("kind", f"must be {KIND}")
    name = f.string(top["name"], "name", _NAME, "a name (lowercase letters, digits, '_')")
    title = f.string(top["title"], "title") if "title" in top else name

    if not isinstance(top["models"], list):
        raise f.fail(
            "models", f"must be a list (empty for static battles only), got {describe(top['models'])}"
        )
    if len(top["models"]) > MAX_MODELS:
        raise f.fail("models", f"at most {MAX_MODELS} models, got {len(top['models'])}")
    models = tuple(_model(f, raw, f"models[{i}]") for i, raw in enumerate(top["models"]))
    names = [m.name for m in models]
    for i, model_name in enumerate(names):
        if model_name in names[:i]:
            raise f.fail(f"models[{i}].name", f"'{model_name}' is in the roster twice")

    static = top.get("static")
    static_from = None
    if static is not None:
        s = f.mapping(static, "static", ("judged",))
        static_from = f.string(s["judged"], "static.judged", _NAME, "a judged leaderboard's name")
    return ArenaConfig(
        name=name,
        title=title,
        models=models,
        generation=_generation(f, top.get("generation") or {}),
        ratings=_ratings(f, top.get("ratings") or {}),
        static_from=static_from,
        source=source,
    )


def _model(f: Fields, raw: Any, where: str) -> ArenaModel:
    m = f.mapping(raw, where, ("name", "endpoint"), ("model", "api_key_env"))
    name = f.string(
        m["name"], f"{where}.name", MODEL_NAME, "a model name (at most 256 letters, digits, _.-/@:+)"
    )
    endpoint = f.string(m["endpoint"], f"{where}.endpoint")
    if endpoint != LOCAL and not (_URL.match(endpoint) and endpoint.rstrip("/").endswith("/v1")):
        raise f.fail(
            f"{where}.endpoint",
            f"must be '{LOCAL}' (the embedded endpoint over LEADERBOARD_MODEL_STORE) or an http(s) base URL "
            f"ending in /v1, got {endpoint!r}",
        )
    model = f.string(m.get("model", name), f"{where}.model", MODEL_NAME, "a model id")
    key_env = f.optional_string(m.get("api_key_env"), f"{where}.api_key_env", _ENV, "an environment variable")
    if key_env is not None and endpoint == LOCAL:
        raise f.fail(f"{where}.api_key_env", "the local endpoint needs no key")
    return ArenaModel(name=name, endpoint=endpoint.rstrip("/"), model=model, api_key_env=key_env)


def _generation(f: Fields, raw: Any) -> ArenaGeneration:
    g = f.mapping(raw, "generation", (), ("max_tokens", "temperature", "top_p", "system_prompt"))
    max_tokens = f.integer(g.get("max_tokens", 512), "generation.max_tokens", 1)
    if max_tokens > MAX_NEW_TOKENS:
        raise f.fail("generation.max_tokens", f"at most {MAX_NEW_TOKENS}, got {max_tokens}")
    temperature = _number(f, g.get("temperature", 0.7), "generation.temperature", 0.0, 2.0)
    top_p = g.get("top_p")
    system = g.get("system_prompt")
    return ArenaGeneration(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=None if top_p is None else _number(f, top_p, "generation.top_p", 0.0, 1.0),
        system_prompt=None if system is None else f.string(system, "generation.system_prompt"),
    )


def _ratings(f: Fields, raw: Any) -> ArenaRatings:
    r = f.mapping(raw, "ratings", (), ("bootstrap", "seed", "anchor"))
    bootstrap = f.integer(r.get("bootstrap", 100), "ratings.bootstrap", 0)
    if bootstrap > 10_000:
        raise f.fail("ratings.bootstrap", f"at most 10000 rounds, got {bootstrap}")
    seed = f.integer(r.get("seed", 0), "ratings.seed", 0)
    anchor = None
    if r.get("anchor") is not None:
        a = f.mapping(r["anchor"], "ratings.anchor", ("model", "rating"))
        anchor = (
            f.string(a["model"], "ratings.anchor.model", MODEL_NAME, "a model name"),
            _number(f, a["rating"], "ratings.anchor.rating", -1e6, 1e6),
        )
    return ArenaRatings(bootstrap=bootstrap, seed=seed, anchor=anchor)


def _number(f: Fields, value: Any, where: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise f.fail(where, f"must be a number, got {describe(value)}")
    if not low <= value <= high:
        raise f.fail(where, f"must be between {low:g} and {high:g}, got {value}")
    return float(value)
