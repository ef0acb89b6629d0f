"""Strict reading of the project's own YAML manifests: leaderboard configs and task sets.

One loader (a SafeLoader that refuses duplicate keys, which PyYAML would silently collapse) and one field
reader that names the file and the field in every error. Unknown fields are refused: a misspelt setting must
not be ignored silently in a file that defines what a score means.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backend.errors import LeaderboardError


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader (no arbitrary objects) that refuses duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # construct_mapping refuses it with its own message
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path, error: type[LeaderboardError], what: str) -> Any:
    """The parsed YAML document at ``path``; ``error`` (naming the file) when it cannot be read or parsed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what}: {exc}") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


def describe(value: Any) -> str:
    """What a value is, for messages: "a mapping", "nothing (null)", "int 3"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


@dataclass(frozen=True)
class Fields:
    """Typed reads of one manifest's fields; every failure is ``error`` naming ``source`` and the field."""

    source: str
    error: type[LeaderboardError]

    def fail(self, where: str, problem: str) -> LeaderboardError:
        return self.error(f"{self.source}: field '{where or '(top level)'}': {problem}")

    def mapping(
        self, value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {describe(value)}")
        prefix = f"{where}." if where else ""
        for key in value:
            if key not in required and key not in optional:
                expected = ", ".join([*required, *optional])
                raise self.fail(f"{prefix}{key}", f"unknown field (expected: {expected})")
        for key in required:
            if key not in value:
                raise self.fail(f"{prefix}{key}", "is required")
        return value

    def string(self, value: Any, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
            raise self.fail(where, f"must be a string{hint}, got {describe(value)}")
        if not value.strip() or value != value.strip():
            raise self.fail(where, f"must be a non-empty string without surrounding spaces, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"{value!r} is not {what or 'valid'}")
        return value

    def optional_string(
        self, value: Any, where: str, pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> str | None:
        return None if value is None else self.string(value, where, pattern, what)

    def integer(self, value: Any, where: str, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(where, f"must be an integer, got {describe(value)}")
        if value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {describe(value)}")
        return value

    def choice(self, value: Any, where: str, enum_type: type[enum.StrEnum]) -> Any:
        allowed = [m.value for m in enum_type]
        if value not in allowed:
            raise self.fail(where, f"must be one of {', '.join(allowed)}; got {value!r}")
        return enum_type(value)

    def items(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"must be a non-empty list, got {describe(value)}")
        return value
