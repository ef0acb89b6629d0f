"""The tiny models are real: transformers loads them, and each option breaks exactly what it says."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import load_file

from backend.hub.local_store import LocalModelStore
from backend.hub.model_files import has_chat_template, license_of, parameter_count, split_model_card
from backend.modelbuilder import build_tiny_model, build_tokenizer

BASE_FILES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def llama_parameters(config: dict) -> int:
    """LlamaForCausalLM's parameter count, from its architecture (untied embeddings, no biases)."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    attention = hidden * hidden * 2 + hidden * kv * 2  # q, o; k, v
    mlp = 3 * hidden * inter
    per_layer = attention + mlp + 2 * hidden  # two RMSNorms
    return 2 * vocab * hidden + config["num_hidden_layers"] * per_layer + hidden


@pytest.fixture
def store(tmp_path: Path) -> LocalModelStore:
    return LocalModelStore(tmp_path / "store")


def _build(store: LocalModelStore, **options: Any) -> tuple[Path, tuple[str, ...], str]:
    sha = build_tiny_model(store, "org/tiny", **options)
    files = store.resolve("org/tiny", "main").files
    return store.repo_dir("org/tiny") / "snapshots" / sha, files, sha


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_the_default_model_loads_with_transformers_and_counts_as_llama(store: LocalModelStore) -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder, files, sha = _build(store)
    assert set(files) == BASE_FILES
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    assert config.model_type == "llama" and config.architectures == ["LlamaForCausalLM"]
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (64, 2, 2)
    assert config.max_position_embeddings == 4096 and config.initializer_range == 0.2

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    assert 1000 <= len(tokenizer) <= 4000 and len(tokenizer) == config.vocab_size
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        config.bos_token_id,
        config.eos_token_id,
        config.pad_token_id,
    )
    assert tokenizer.decode(tokenizer("The answer is 42.")["input_ids"], skip_special_tokens=True) == (
        "The answer is 42."
    )

    headers = store.safetensors_headers("org/tiny", sha)
    assert parameter_count(headers) == llama_parameters(_config(folder)) == 203_072
    model = headers["model.safetensors"]
    assert model["model.layers.1.self_attn.k_proj.weight"]["shape"] == [32, 64]
    assert model["model.layers.0.mlp.down_proj.weight"]["shape"] == [64, 128]
    assert model["lm_head.weight"]["shape"] == [config.vocab_size, 64]

    weights = load_file(folder / "model.safetensors")
    assert np.all(weights["model.norm.weight"] == 1)
    assert 0.18 < weights["model.embed_tokens.weight"].std() < 0.22

    metadata, body = split_model_card((folder / "README.md").read_text())
    assert license_of(metadata) == "apache-2.0" and len(body) > 200


def test_the_chat_template_renders(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    build_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=False)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|begin_of_text|><|start|>user\nhi<|eot|>\n"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(prompt, str) and prompt.endswith("<|start|>assistant\n")


def test_builds_are_deterministic(tmp_path: Path) -> None:
    one = build_tiny_model(LocalModelStore(tmp_path / "one"), "org/a")
    two = build_tiny_model(LocalModelStore(tmp_path / "two"), "org/b")
    other_seed = build_tiny_model(LocalModelStore(tmp_path / "two"), "org/c", seed=1)
    assert one == two != other_seed


def test_no_license(store: LocalModelStore) -> None:
    folder, _, _ = _build(store, license=None)
    metadata, _ = split_model_card((folder / "README.md").read_text())
    assert license_of(metadata) is None and metadata["library_name"] == "transformers"


def test_no_card_and_short_card(store: LocalModelStore) -> None:
    _, files, _ = _build(store, card_body=None)
    assert files == tuple(sorted(BASE_FILES - {"README.md"}))
    folder, _, _ = _build(store, card_body="Too short.")
    assert split_model_card((folder / "README.md").read_text())[1] == "Too short."


def test_no_chat_template(store: LocalModelStore) -> None:
    folder, files, _ = _build(store, chat_template=False)
    assert not has_chat_template((folder / "tokenizer_config.json").read_text(), files)
    folder, files, _ = _build(store)
    assert has_chat_template((folder / "tokenizer_config.json").read_text(), files)


def test_no_safetensors_gives_placeholder_bytes_never_a_pickle(store: LocalModelStore) -> None:
    folder, files, sha = _build(store, safetensors=False)
    assert "pytorch_model.bin" in files and not any(f.endswith(".safetensors") for f in files)
    assert store.safetensors_headers("org/tiny", sha) == {}
    assert not (folder / "pytorch_model.bin").read_bytes().startswith(b"\x80")  # pickle protocol 2+ opcode


def test_remote_code_is_refused_by_transformers(store: LocalModelStore) -> None:
    from transformers import AutoConfig

    folder, files, _ = _build(store, remote_code=True)
    assert {"modeling_tiny.py", "configuration_tiny.py"} <= set(files)
    assert _config(folder)["auto_map"]["AutoModelForCausalLM"] == "modeling_tiny.TinyCustomForCausalLM"
    assert (folder / "modeling_tiny.py").read_text().startswith("#")
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoConfig.from_pretrained(folder, trust_remote_code=False)


def test_declared_parameters_cost_no_disk(store: LocalModelStore) -> None:
    started = time.monotonic()
    folder, files, sha = _build(store, declared_params=150_000_000_000)
    assert time.monotonic() - started < 5
    assert "model-extra.safetensors" in files
    assert parameter_count(store.safetensors_headers("org/tiny", sha)) == 150_000_000_000
    extra = (folder / "model-extra.safetensors").stat()
    assert extra.st_size > 290_000_000_000 and extra.st_blocks * 512 < 2**20  # BF16: 2 bytes each


def test_gptq_counts_as_the_original_model_plus_bookkeeping(store: LocalModelStore) -> None:
    folder, _, sha = _build(store, gptq_bits=4)
    config = _config(folder)
    assert (
        config["quantization_config"]["quant_method"] == "gptq" and config["quantization_config"]["bits"] == 4
    )
    header = store.safetensors_headers("org/tiny", sha)["model.safetensors"]
    assert header["model.layers.0.self_attn.q_proj.qweight"] == {
        "dtype": "I32",
        "shape": [8, 64],
        "data_offsets": header["model.layers.0.self_attn.q_proj.qweight"]["data_offsets"],
    }
    assert "model.layers.0.self_attn.q_proj.weight" not in header
    # Per layer, every Linear adds scales + qzeros (one group each: out + out) and g_idx (in * 8).
    linear_out = 64 + 32 + 32 + 64 + 128 + 128 + 64
    linear_in = 6 * 64 + 128
    bookkeeping = 2 * (2 * linear_out + 8 * linear_in)
    assert parameter_count({"m": header}, gptq_bits=4) == llama_parameters(config) + bookkeeping


def test_adapter_repository(store: LocalModelStore) -> None:
    folder, files, sha = _build(store, adapter_of="org/base")
    assert "config.json" not in files and {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "org/base" and adapter["peft_type"] == "LORA"
    header = store.safetensors_headers("org/tiny", sha)["adapter_model.safetensors"]
    assert header["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]["shape"] == [4, 64]
    assert header["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]["shape"] == [32, 4]
    metadata, _ = split_model_card((folder / "README.md").read_text())
    assert metadata["base_model"] == "org/base"


def test_corrupt_weights_have_a_valid_header_but_do_not_load(store: LocalModelStore) -> None:
    folder, _, sha = _build(store, corrupt_weights=True)
    assert parameter_count(store.safetensors_headers("org/tiny", sha)) == 203_072
    with pytest.raises(SafetensorError):
        load_file(folder / "model.safetensors")


def test_extra_files_are_written_as_given(store: LocalModelStore) -> None:
    folder, files, _ = _build(
        store, extra_files={"chat_template.jinja": "{{ x }}", "sub/blob.bin": b"\x00\x01"}
    )
    assert {"chat_template.jinja", "sub/blob.bin"} <= set(files)
    assert (folder / "sub" / "blob.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="relative path"):
        build_tiny_model(store, "org/bad", extra_files={"../escape": "x"})
