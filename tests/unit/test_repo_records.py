"""The typed readers of config.json, tokenizer_config.json and the model card: every field they use is
checked against its type and size, and every malformation is a RepoFileInvalid naming file, field and fix."""

from __future__ import annotations

import json

import pytest

from backend.errors import RepoFileInvalid
from backend.hub.repo_records import (
    MAX_CONFIG_BYTES,
    MAX_TOKENIZER_BYTES,
    ModelCard,
    ModelConfig,
    Quantization,
    TokenizerConfig,
    loadable_limit,
)

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64}


def _config(**fields: object) -> str:
    return json.dumps({**LLAMA, **fields})


def test_a_config_keeps_what_validation_uses_and_tolerates_the_rest() -> None:
    config = ModelConfig.parse(_config(unknown_field={"nested": [1, 2]}))
    assert config == ModelConfig("llama", ("LlamaForCausalLM",), needs_remote_code=False, quantization=None)
    assert ModelConfig.parse("{}").architectures == ()
    assert ModelConfig.parse(_config(architectures=None)).architectures == ()
    assert ModelConfig.parse(_config(auto_map={"AutoConfig": "x.Y"})).needs_remote_code


def test_quantization_config() -> None:
    gptq = ModelConfig.parse(_config(quantization_config={"quant_method": "GPTQ", "bits": 8}))
    assert gptq.quantization == Quantization("gptq", 8)
    assert ModelConfig.parse(
        _config(quantization_config={"quant_method": "gptq"})
    ).quantization == Quantization("gptq", None)
    assert ModelConfig.parse(_config(quantization_config={})).quantization == Quantization("", None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            _config(architectures=[1, {}, None]),
            "architectures [1, {}, None] is not a list of model class names",
        ),
        (_config(architectures="LlamaForCausalLM"), "architectures 'LlamaForCausalLM' is not a list"),
        (_config(architectures=["Llama,ForCausalLM"]), "is not a list of model class names"),
        (_config(architectures=["A" * 101]), "is not a list of model class names"),
        (_config(architectures=["LlamaForCausalLM"] * 17), "is not a list of model class names"),
        (_config(model_type=["llama"]), "model_type ['llama'] is not a model type name"),
        (_config(model_type="x" * 101), "is not a model type name"),
        (_config(quantization_config="gptq"), "quantization_config 'gptq' is not a JSON object"),
        (_config(quantization_config={"quant_method": 4}), "quant_method 4 is not a method name"),
        (_config(quantization_config={"quant_method": "gptq", "bits": [4]}), "bits [4] is not an integer"),
        (_config(quantization_config={"quant_method": "gptq", "bits": {"a": 1}}), "bits {'a': 1} is not an"),
        (_config(quantization_config={"quant_method": "gptq", "bits": True}), "bits True is not an integer"),
        (_config(quantization_config={"quant_method": "gptq", "bits": 4.0}), "bits 4.0 is not an integer"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON (RecursionError"),
        ('{"vocab_size": ' + "9" * 5000 + "}", "not valid JSON (ValueError"),
        ("{not json", "not valid JSON (Expecting property name"),
        ("[1, 2]", "not a JSON object (a JSON list)"),
        ("", "not valid JSON"),
    ],
)
def test_malformed_configs_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(RepoFileInvalid) as caught:
        ModelConfig.parse(text)
    assert caught.value.filename == "config.json"
    assert problem in caught.value.problem
    assert caught.value.fix and len(caught.value.message) < 500


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"chat_template": "{{ messages }}"}, True),
        ({"chat_template": [{"name": "default", "template": "{{ x }}"}]}, True),
        ({"chat_template": [1, "x"]}, False),
        ({"chat_template": "  "}, False),
        ({"chat_template": None}, False),
        ({}, False),
    ],
)
def test_tokenizer_config_chat_template(config: dict, expected: bool) -> None:
    assert TokenizerConfig.parse(json.dumps(config)).has_chat_template is expected


@pytest.mark.parametrize("text", ['{"chat_template": 42}', '{"chat_template": {"a": 1}}', "[]", "{x"])
def test_malformed_tokenizer_configs(text: str) -> None:
    with pytest.raises(RepoFileInvalid) as caught:
        TokenizerConfig.parse(text)
    assert caught.value.filename == "tokenizer_config.json"


def _card(metadata: str, body: str = "Body text.") -> str:
    return f"---\n{metadata}\n---\n\n{body}\n"


def test_card_license_bases_and_body() -> None:
    card = ModelCard.parse(_card("license: mit\nbase_model: org/base"))
    assert card == ModelCard(license="mit", base_models=("org/base",), body="Body text.")
    assert ModelCard.parse(_card("base_model: [org/a, org/b]")).base_models == ("org/a", "org/b")
    assert ModelCard.parse("Just text.") == ModelCard(license=None, base_models=(), body="Just text.")
    assert ModelCard.parse(_card("license: 42")).license is None  # no license declared: the license rule


@pytest.mark.parametrize(
    "metadata",
    [
        "base_model: 42",
        "base_model: true",
        "base_model: {a: 1}",
        "base_model: [org/a, 7]",
        "base_model: [" + ", ".join(f"org/m{i}" for i in range(101)) + "]",
        "base_model: " + "x" * 201,
        "license: " + "x" * 101,
        'license: "mit\\u0000"',
    ],
)
def test_malformed_card_metadata_is_invalid(metadata: str) -> None:
    with pytest.raises(RepoFileInvalid) as caught:
        ModelCard.parse(_card(metadata))
    assert caught.value.filename == "README.md"
    assert len(caught.value.message) < 500


def test_the_files_transformers_may_open_and_their_limits() -> None:
    assert loadable_limit("config.json") == MAX_CONFIG_BYTES
    assert loadable_limit("tokenizer.json") == MAX_TOKENIZER_BYTES
    assert loadable_limit("spiece.model") == MAX_TOKENIZER_BYTES
    for other in ("model.safetensors", "modeling_x.py", "sub/config.json", "README.md", "a\\b.model"):
        assert loadable_limit(other) is None
