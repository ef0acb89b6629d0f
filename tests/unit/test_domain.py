from __future__ import annotations

import pytest

from backend.domain import REPO_ID_RE, Precision, namespace_of, parse_choice
from backend.errors import InvalidInput


@pytest.mark.parametrize(
    "repo_id", ["meta-llama/Llama-3.1-8B", "a/b", "Org_1/model.v2-instruct", "x/" + "y" * 96]
)
def test_valid_repo_ids(repo_id):
    assert REPO_ID_RE.match(repo_id)


@pytest.mark.parametrize(
    "repo_id",
    ["", "model", "a/b/c", "org/-x", "org/x-", "org/a..b", "org/a--b", "org/a b", "x/" + "y" * 97, "/x"],
)
def test_invalid_repo_ids(repo_id):
    assert not REPO_ID_RE.match(repo_id)


def test_namespace_is_the_org():
    assert namespace_of("meta-llama/Llama-3.1-8B") == "meta-llama"


def test_choices_parse_case_insensitively_or_list_what_is_accepted():
    assert parse_choice(Precision, "gptq", "precision") is Precision.GPTQ
    with pytest.raises(
        InvalidInput, match="precision 'fp8' is not one of: float16, bfloat16, 8bit, 4bit, GPTQ"
    ):
        parse_choice(Precision, "fp8", "precision")
