"""The one rule for Hub repo ids, commit shas and revisions (backend/domain.py), and its users agree."""

from __future__ import annotations

import pytest

from backend.domain import is_repo_id, is_revision, is_sha, validate_repo_id
from backend.errors import InvalidInput, ModelNotFound
from backend.hub.local_store import LocalModelStore

VALID_IDS = [
    "meta-llama/Llama-3.1-8B",
    "a/b",
    "Org_1/model.v2-instruct",
    "x/" + "y" * 96,
    "TIGER-Lab/MMLU-Pro",  # a dataset: the same rule
    "org/x.gitx",
]
INVALID_IDS = [
    "",
    "model",  # the namespace is required
    "a/b/c",
    "org/-x",
    "org/x-",
    "org/.x",
    "org/a..b",
    "org/a--b",
    "org--a/b",
    "org/a b",
    "x/" + "y" * 97,
    "/x",
    "org/",
    "../etc",
    "org/../x",
    "org/name\n",  # a trailing newline, which `$` would let through
    "org/x.git",  # huggingface_hub refuses it
    "org/na\x00me",
    "org/modèle",
]


@pytest.mark.parametrize("repo_id", VALID_IDS)
def test_valid_repo_ids(repo_id: str) -> None:
    assert is_repo_id(repo_id)
    assert validate_repo_id(repo_id, "dataset") == repo_id


@pytest.mark.parametrize("repo_id", [*INVALID_IDS, None, 42, ["a/b"]])
def test_invalid_repo_ids_name_what_and_the_rule(repo_id: object) -> None:
    assert not is_repo_id(repo_id)
    with pytest.raises(InvalidInput, match=r"^dataset id .* is not a Hub repository id: give ORG/NAME"):
        validate_repo_id(repo_id, "dataset")


def test_a_long_invalid_id_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_repo_id("x" * 10_000, "model")
    assert len(caught.value.message) < 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0123456789abcdef" * 2 + "01234567", True),
        ("a" * 40 + "\n", False),
        ("A" * 40, False),
        ("a" * 39, False),
    ],
)
def test_sha(value: str, expected: bool) -> None:
    assert is_sha(value) is expected


@pytest.mark.parametrize(
    "revision", ["main", "v1.0", "refs/pr/1", "a" * 40, "abc1234", "feat/x-y_z", "r" * 255]
)
def test_valid_revisions(revision: str) -> None:
    assert is_revision(revision)


@pytest.mark.parametrize(
    "revision",
    [
        *("", "r" * 256, "b" * 10_000, "a b", "a..b", "/x", "x/", "x.lock", "-x", ".x", "a\nb", "a\x00b"),
        *("a@{1}", "a//b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "x/.y"),
    ],
)
def test_invalid_revisions(revision: str) -> None:
    assert not is_revision(revision)


@pytest.mark.parametrize("repo_id", INVALID_IDS)
def test_the_local_store_uses_the_same_rule(tmp_path, repo_id: str) -> None:
    with pytest.raises(ModelNotFound, match="not a valid repository id"):
        LocalModelStore(tmp_path).resolve(repo_id, "main")
