"""Docs and code in step: every setting documented, every error actionable and uniquely coded."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import backend.errors as errors
from backend.cli.main import cli
from backend.domain import TRANSITIONS, Status
from backend.errors import ConfigurationError, LeaderboardError
from backend.settings import Settings, get_settings, settings_table

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [row[0] for row in settings_table()])
def test_every_setting_is_documented_in_the_readme_and_in_help(name):
    assert f"| `{name}` |" in README
    assert name in CliRunner().invoke(cli, ["--help"]).output


def test_readme_documents_no_setting_that_does_not_exist():
    documented = {line.split("`")[1] for line in README.splitlines() if line.startswith("| `LEADERBOARD_")}
    assert documented == {row[0] for row in settings_table()}


def test_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LEADERBOARD_RATE_LIMIT_COUNT", "9")
    monkeypatch.setenv("LEADERBOARD_MODEL_STORE", "/srv/models")
    settings = get_settings()
    assert settings.rate_limit_count == 9
    assert str(settings.model_store) == "/srv/models"


def test_an_invalid_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("LEADERBOARD_MAX_ATTEMPTS", "zero")
    with pytest.raises(ConfigurationError, match="LEADERBOARD_MAX_ATTEMPTS"):
        get_settings()


def _error_classes() -> list[type[LeaderboardError]]:
    return [
        cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, LeaderboardError)
    ]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_says_what_to_do(cls):
    doc = (cls.__doc__ or "").strip()
    assert doc and len(doc) > 30, f"{cls.__name__} needs a docstring that says what to do"
    assert 400 <= cls.http_status < 600


def test_error_codes_are_unique():
    codes = [cls.code for cls in _error_classes() if "code" in vars(cls)]
    assert len(codes) == len(set(codes))


def test_default_message_is_the_docstring():
    assert errors.RequestNotFound().message.startswith("No such request")


def _documented_transitions() -> set[tuple[Status, Status]]:
    """The lifecycle README's "How it is built" states, as (from, to) pairs: "A | B -> C -> D | E; ..."."""
    start = README.index("PENDING -> RUNNING")
    text = README[start : README.index(".", start)].replace("\n", " ")
    pairs = set()
    for chain in text.split(";"):
        steps = [re.sub(r"\(.*?\)", "", step) for step in chain.split("->")]
        for sources, targets in itertools.pairwise(steps):
            for source in sources.split("|"):
                for target in targets.split("|"):
                    pairs.add((Status(source.strip()), Status(target.strip())))
    return pairs


def test_the_lifecycle_in_the_readme_is_the_one_the_code_enforces():
    enforced = {(source, target) for target, sources in TRANSITIONS.items() for source in sources}
    assert _documented_transitions() == enforced
    # Final statuses never move on their own.
    assert all(
        Status.FINISHED not in sources and Status.CANCELLED not in sources for sources in TRANSITIONS.values()
    )


def test_every_error_class_lives_in_errors_py():
    """One root exception and one module of its subclasses, so the tests above see every one of them."""
    error_names = {name for name, value in vars(errors).items() if isinstance(value, type)}
    defined_elsewhere = []
    for path in Path(errors.__file__).parent.rglob("*.py"):
        if path.name == "errors.py" and path.parent.name == "backend":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & ({"Exception", "BaseException"} | error_names) or any(
                    b.endswith(("Error", "Rejected", "Failed")) for b in bases
                ):
                    defined_elsewhere.append(f"{path.name}:{node.name}")
    assert not defined_elsewhere


def test_settings_defaults_match_the_reference():
    settings = Settings()
    assert (settings.rate_limit_count, settings.rate_limit_days) == (5, 7.0)
    assert (settings.max_params_b, settings.max_params_b_quantized, settings.min_card_chars) == (
        100.0,
        140.0,
        200,
    )
