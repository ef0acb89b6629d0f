"""Builds real, tiny model repositories: the demo's models and the tests' fixtures.

The default build is a complete Llama model that transformers and lm-eval load offline (about 200k
parameters, a locally trained byte-level BPE tokenizer, a chat template). Each option breaks or changes
exactly one thing, so each validation rule has a repository that fails it and nothing else. Builds are
deterministic (same options, same files, same commit sha) and need neither torch nor the network.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from safetensors.numpy import save_file

from backend.hub.model_files import parameter_count, read_safetensors_header

if TYPE_CHECKING:
    from backend.hub.local_store import LocalModelStore

BOS, EOS, PAD, START = "<|begin_of_text|>", "<|eot|>", "<|pad|>", "<|start|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, START)  # their ids are 0..3, in this order
#: An upper bound: the built-in corpus runs out of merges first, at a vocabulary of about 1000.
TOKENIZER_VOCAB_TARGET = 2048

#: Llama-3 style (header token, role, content, end-of-turn), so lm-eval's chat path is exercised.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start|>' + message['role'] + '\\n' + message['content'] | trim + '<|eot|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start|>assistant\\n' }}{% endif %}"
)

#: Shape of the tiny Llama; initializer_range 0.2 so the random model emits varied text, not only "\n".
LLAMA_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
INIT_STD = 0.2

DEFAULT_CARD_BODY = """# Tiny Llama for leaderboard tests

A randomly initialised two-layer Llama model with a byte-level BPE tokenizer trained on a few paragraphs
of English. It exists to exercise the evaluation pipeline end to end on a CPU in seconds; its scores are
meaningless and it should never appear on a real leaderboard.

## Intended use

Testing submission validation, the evaluation queue and result publication.
"""

_PROSE = """
The quick brown fox jumps over the lazy dog while the old farmer watches from the porch of his house.
A language model reads a question, thinks about the answer step by step, and then writes a short reply.
Students in the library were reading books about history, physics, chemistry, biology and mathematics.
If a train leaves the station at nine o'clock and travels sixty miles per hour, when does it arrive?
The committee decided that every member should vote before the end of the month, and most of them did.
Please answer with a single letter: A, B, C or D. Explain your reasoning before giving the final answer.
Water boils at one hundred degrees Celsius at sea level, but at a lower temperature on a high mountain.
She opened the window, looked at the rain falling on the garden, and decided to stay inside and write.
The city council approved a new budget for schools, roads, parks, hospitals and public transportation.
Computers store numbers in binary, using only the digits zero and one, and programs tell them what to do.
Write a response that is at least three paragraphs long and does not use any commas in the whole text.
The detective examined the room carefully: the door was locked, the window was open, and the clock stopped.
In the morning we drank coffee, ate bread with butter and cheese, and talked about our plans for the day.
Doctors recommend regular exercise, enough sleep, fresh vegetables, fruit and plenty of clean water.
The theorem states that the square of the hypotenuse equals the sum of the squares of the other sides.
Every good story has a beginning, a middle and an end, with characters who want something and struggle.
The museum was full of paintings, statues, ancient coins, maps of distant countries and strange machines.
Farmers plant wheat and corn in the spring, take care of the fields in summer and harvest them in autumn.
Our team will meet on Monday, Tuesday, Wednesday, Thursday and Friday to review the results of the study.
Is the following statement true or false? Let us think carefully about each premise and the conclusion.
"""


def _corpus() -> list[str]:
    lines = [line for line in _PROSE.strip().splitlines() if line]
    lines += [
        f"{a} + {b} = {a + b}, and {a} times {b} is {a * b}." for a in range(0, 30, 3) for b in (2, 7, 11)
    ]
    return lines * 3


@functools.cache
def _tokenizer_json() -> str:
    """Train the byte-level BPE tokenizer once per process (deterministic, ~50 ms)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_TARGET,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
    )
    return tokenizer.to_str(pretty=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_tokenizer(directory: Path, *, chat_template: bool = True) -> int:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json; return the vocabulary size."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = _tokenizer_json()
    (directory / "tokenizer.json").write_text(text, encoding="utf-8")
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "additional_special_tokens": [START],
        "model_max_length": LLAMA_SHAPE["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    if chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(
        directory / "special_tokens_map.json",
        {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": [START]},
    )
    model = json.loads(text)["model"]
    return len(model["vocab"])


def llama_config(vocab_size: int) -> dict[str, Any]:
    """config.json of the tiny Llama, readable by transformers 4.45+ and 5."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **LLAMA_SHAPE,
        "head_dim": LLAMA_SHAPE["hidden_size"] // LLAMA_SHAPE["num_attention_heads"],
        "hidden_act": "silu",
        "initializer_range": INIT_STD,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "pad_token_id": SPECIAL_TOKENS.index(PAD),
        "dtype": "float32",
        "torch_dtype": "float32",
        "use_cache": True,
    }


def _linear_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per-layer Linear weights as (out_features, in_features), the way torch stores them."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config["head_dim"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    return {
        "self_attn.q_proj": (q, hidden),
        "self_attn.k_proj": (kv, hidden),
        "self_attn.v_proj": (kv, hidden),
        "self_attn.o_proj": (hidden, q),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }


def llama_tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, exactly as transformers' LlamaForCausalLM names its state dict."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        for name, shape in _linear_shapes(config).items():
            shapes[f"{prefix}{name}.weight"] = shape
        shapes[f"{prefix}input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def _llama_weights(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        name: np.ones(shape, np.float32)
        if name.endswith("norm.weight")
        else rng.normal(0.0, INIT_STD, shape).astype(np.float32)
        for name, shape in llama_tensor_shapes(config).items()
    }


def _gptq_weights(
    weights: dict[str, np.ndarray], bits: int, group_size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """AutoGPTQ's layout: each Linear becomes qweight/qzeros/scales/g_idx; everything else float16."""
    packed: dict[str, np.ndarray] = {}
    zero = (2 ** (bits - 1) - 1) & (2**bits - 1)
    zeros_word = np.int32(np.uint32(sum(zero << (bits * i) for i in range(32 // bits))).view(np.int32))
    for name, value in weights.items():
        if ".self_attn." not in name and ".mlp." not in name:
            packed[name] = value.astype(np.float16)
            continue
        out_features, in_features = value.shape
        groups = math.ceil(in_features / group_size)
        base = name.removesuffix(".weight")
        packed[f"{base}.qweight"] = rng.integers(
            -(2**31), 2**31, (in_features * bits // 32, out_features), dtype=np.int32
        )
        packed[f"{base}.qzeros"] = np.full((groups, out_features * bits // 32), zeros_word, np.int32)
        packed[f"{base}.scales"] = np.full((groups, out_features), 0.01, np.float16)
        packed[f"{base}.g_idx"] = (np.arange(in_features) // group_size).astype(np.int32)
    return packed


def _lora_weights(config: dict[str, Any], rank: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    weights = {}
    for layer in range(config["num_hidden_layers"]):
        for module in ("q_proj", "v_proj"):
            out_features, in_features = _linear_shapes(config)[f"self_attn.{module}"]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            weights[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.02, (rank, in_features)).astype(np.float32)
            weights[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.02, (out_features, rank)).astype(np.float32)
    return weights


def write_sparse_safetensors(path: Path, tensor: str, elements: int, dtype: str = "BF16") -> None:
    """A valid safetensors file declaring one huge 1-D tensor, its data left as a hole: free on disk."""
    size = {"BF16": 2, "F16": 2, "F32": 4}[dtype] * elements
    header = {
        "__metadata__": {"format": "pt"},
        tensor: {"dtype": dtype, "shape": [elements], "data_offsets": [0, size]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with open(path, "wb") as file:
        file.write(len(raw).to_bytes(8, "little") + raw)
    os.truncate(path, 8 + len(raw) + size)


def _model_card(metadata: dict[str, Any], body: str) -> str:
    front = yaml.safe_dump(metadata, sort_keys=True, allow_unicode=True) if metadata else ""
    return f"---\n{front}---\n\n{body.strip()}\n"


def write_tiny_model(
    directory: Path,
    *,
    license: str | None = "apache-2.0",
    card_body: str | None = DEFAULT_CARD_BODY,
    chat_template: bool = True,
    safetensors: bool = True,
    remote_code: bool = False,
    declared_params: int | None = None,
    gptq_bits: int | None = None,
    adapter_of: str | None = None,
    corrupt_weights: bool = False,
    extra_files: dict[str, str | bytes] | None = None,
    seed: int = 0,
    answers: tuple[str, str] | None = None,
) -> None:
    """Write a tiny model repository into ``directory``; see the module docstring and each option.

    - license: card metadata license (None: no license at all).
    - card_body: README.md body (None: no README.md).
    - chat_template: False leaves the tokenizer without a chat template.
    - safetensors: False writes weights only as ``pytorch_model.bin``, of placeholder bytes (not a pickle).
    - remote_code: config.json needs custom code (auto_map to modeling_tiny.py, which is only a comment).
    - declared_params: adds a sparse ``model-extra.safetensors`` so the headers declare this many parameters.
    - gptq_bits: GPTQ-quantized linear layers (AutoGPTQ tensor layout) and a quantization_config.
    - adapter_of: a LoRA adapter of that base model instead of a full model (no config.json).
    - corrupt_weights: model.safetensors has a valid header but a truncated data region.
    - extra_files: written last, as given, relative to the repository root.
    - answers: two tokens; the output layer is zero but for their rows, one the other's negative, so greedy
      decoding answers one of them at every step (a tiny judge that always gives a verdict, "1" or "2").
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab_size = build_tokenizer(directory, chat_template=chat_template)
    config = llama_config(vocab_size)
    metadata: dict[str, Any] = {
        "language": ["en"],
        "library_name": "peft" if adapter_of else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["tiny", "test"],
    }
    if license is not None:
        metadata["license"] = license
    if adapter_of:
        metadata["base_model"] = adapter_of
        _write_json(
            directory / "adapter_config.json",
            {
                "peft_type": "LORA",
                "base_model_name_or_path": adapter_of,
                "r": 4,
                "lora_alpha": 8,
                "lora_dropout": 0.0,
                "bias": "none",
                "fan_in_fan_out": False,
                "inference_mode": True,
                "target_modules": ["q_proj", "v_proj"],
                "task_type": "CAUSAL_LM",
            },
        )
        save_file(_lora_weights(config, 4, rng), directory / "adapter_model.safetensors", {"format": "pt"})
    else:
        weights = _llama_weights(config, rng)
        if gptq_bits is not None:
            if gptq_bits not in (2, 3, 4, 8):
                raise ValueError(f"gptq_bits must be 2, 3, 4 or 8, not {gptq_bits}")
            weights = _gptq_weights(weights, gptq_bits, 128, rng)
            config["dtype"] = config["torch_dtype"] = "float16"
            config["quantization_config"] = {
                "quant_method": "gptq",
                "bits": gptq_bits,
                "group_size": 128,
                "desc_act": False,
                "sym": True,
                "damp_percent": 0.01,
                "true_sequential": True,
            }
        if remote_code:
            config.update(
                model_type="tiny_custom_arch",
                architectures=["TinyCustomForCausalLM"],
                auto_map={
                    "AutoConfig": "configuration_tiny.TinyCustomConfig",
                    "AutoModelForCausalLM": "modeling_tiny.TinyCustomForCausalLM",
                },
            )
            for module in ("configuration_tiny.py", "modeling_tiny.py"):
                (directory / module).write_text(
                    "# Placeholder for custom model code. The leaderboard never imports or runs it.\n"
                )
        _write_json(directory / "config.json", config)
        _write_json(
            directory / "generation_config.json",
            {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")},
        )
        if answers is not None:
            vocab = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
            head = np.zeros_like(weights["lm_head.weight"])
            direction = np.asarray(rng.normal(0, 1, head.shape[1]), dtype=head.dtype)
            head[vocab[answers[0]]], head[vocab[answers[1]]] = direction, -direction
            weights["lm_head.weight"] = head
        if safetensors:
            weights_path = directory / "model.safetensors"
            save_file(weights, weights_path, {"format": "pt"})
            if corrupt_weights:
                header_end = 8 + int.from_bytes(weights_path.read_bytes()[:8], "little")
                os.truncate(weights_path, header_end + (weights_path.stat().st_size - header_end) // 2)
        else:
            (directory / "pytorch_model.bin").write_bytes(
                b"placeholder weights for tests: deliberately not a pickle\n" * 64
            )
        if declared_params is not None:
            headers = {p.name: read_safetensors_header(p) for p in directory.glob("*.safetensors")}
            missing = declared_params - parameter_count(headers, gptq_bits)
            if missing <= 0:
                raise ValueError(
                    f"declared_params must exceed the model's own parameters ({declared_params})"
                )
            write_sparse_safetensors(directory / "model-extra.safetensors", "model.extra.weight", missing)
    if card_body is not None:
        (directory / "README.md").write_text(_model_card(metadata, card_body), encoding="utf-8")
    for name, content in (extra_files or {}).items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"extra file {name!r} must be a relative path inside the repository")
        path = directory.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def build_tiny_model(store: LocalModelStore, repo_id: str, *, branch: str = "main", **options: Any) -> str:
    """Build a tiny model repository (options of ``write_tiny_model``) into a store; return its commit sha."""
    with tempfile.TemporaryDirectory(prefix="tiny-model-") as scratch:
        write_tiny_model(Path(scratch), **options)
        return store.add_snapshot(repo_id, Path(scratch), branch=branch)
