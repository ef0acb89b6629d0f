"""Typed records of the repository files validation reads: config.json, tokenizer_config.json and the card.

Each file is parsed here once, at the edge; past it, code trusts the types. A parser tolerates fields it does
not use and checks every field it does use against its type and size, raising RepoFileInvalid with the file,
the field and the fix. Each kind of file has a size limit, which the model source enforces before a byte is
decoded (a bigger file is RepoFileRefused).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

from backend.domain import preview
from backend.errors import RepoFileInvalid
from backend.hub.model_files import license_of, split_model_card, template_is_set

MIB = 2**20
#: Configs, tokenizer configs and chat templates: real ones are kilobytes, tokenizer configs listing a big
#: vocabulary's added tokens reach a few MB.
MAX_CONFIG_BYTES = 8 * MIB
#: Tokenizer data (tokenizer.json, vocabularies, merges, sentencepiece models): the largest real ones, for
#: 256k-token vocabularies, are about 35 MB.
MAX_TOKENIZER_BYTES = 64 * MIB
#: The model card (README.md): text for people, a few tens of kB.
MAX_CARD_BYTES = 1 * MIB

#: The root files transformers may open to load a config and a tokenizer (never code, never weights), each
#: with its size limit. Validation loads from a folder holding copies of these files and nothing else.
LOADABLE_FILES: dict[str, int] = {
    "config.json": MAX_CONFIG_BYTES,
    "generation_config.json": MAX_CONFIG_BYTES,
    "tokenizer_config.json": MAX_CONFIG_BYTES,
    "special_tokens_map.json": MAX_CONFIG_BYTES,
    "added_tokens.json": MAX_CONFIG_BYTES,
    "chat_template.jinja": MAX_CONFIG_BYTES,
    "chat_template.json": MAX_CONFIG_BYTES,
    "tokenizer.json": MAX_TOKENIZER_BYTES,
    "vocab.json": MAX_TOKENIZER_BYTES,
    "vocab.txt": MAX_TOKENIZER_BYTES,
    "merges.txt": MAX_TOKENIZER_BYTES,
    "*.model": MAX_TOKENIZER_BYTES,  # sentencepiece
}

#: The longest model type or architecture name taken; transformers' are under 50 characters.
MAX_NAME_CHARS = 100
#: More architectures or base models than this is not a real config or card.
MAX_ARCHITECTURES = 16
MAX_BASE_MODELS = 100
MAX_BASE_MODEL_CHARS = 200
#: The longest license id taken (the Hub's are under 30 characters, custom license names a few more).
MAX_LICENSE_CHARS = 100
CLASS_NAME = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME_CHARS - 1}}}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a control character: not in one-line text


def loadable_limit(filename: str) -> int | None:
    """The size limit of a root file transformers may open to load config or tokenizer; None for others."""
    if "/" in filename or "\\" in filename or "\x00" in filename:
        return None
    for pattern, limit in LOADABLE_FILES.items():
        if fnmatch.fnmatchcase(filename, pattern):
            return limit
    return None


def parse_json_object(text: str, filename: str) -> dict[str, Any]:
    """A JSON object from a repository file; RepoFileInvalid when it is not one (malformed, too deeply
    nested, an integer too long to parse, or another JSON value)."""
    fix = f"fix {filename} so that it parses as a JSON object (save_pretrained writes it so)"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RepoFileInvalid(filename, f"not valid JSON ({exc.msg}, line {exc.lineno})", fix) from exc
    except (ValueError, RecursionError) as exc:
        raise RepoFileInvalid(
            filename,
            f"not valid JSON ({type(exc).__name__}: nested or sized beyond what a parser accepts)",
            fix,
        ) from exc
    if not isinstance(value, dict):
        raise RepoFileInvalid(filename, f"not a JSON object (a JSON {type(value).__name__})", fix)
    return value


def _name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_CHARS


@dataclass(frozen=True)
class Quantization:
    """``quantization_config``: the method (lower case, "" when not given) and the bits when given."""

    method: str
    bits: int | None


@dataclass(frozen=True)
class ModelConfig:
    """What validation uses of config.json."""

    model_type: str | None
    architectures: tuple[str, ...]  # class names, as transformers saves them
    needs_remote_code: bool  # an ``auto_map``: the model's own code would be imported
    quantization: Quantization | None

    @classmethod
    def parse(cls, text: str, filename: str = "config.json") -> ModelConfig:
        raw = parse_json_object(text, filename)
        model_type = raw.get("model_type")
        if model_type is not None and not _name(model_type):
            raise RepoFileInvalid(
                filename,
                f"model_type {preview(model_type)} is not a model type name",
                f"set model_type to the transformers model type (a string of at most {MAX_NAME_CHARS} characters)",
            )
        architectures = raw.get("architectures")
        if architectures is None:
            architectures = []
        if (
            not isinstance(architectures, list)
            or len(architectures) > MAX_ARCHITECTURES
            or not all(isinstance(a, str) and CLASS_NAME.fullmatch(a) for a in architectures)
        ):
            raise RepoFileInvalid(
                filename,
                f"architectures {preview(architectures)} is not a list of model class names",
                'set architectures to a list of class names, e.g. ["LlamaForCausalLM"], as save_pretrained '
                "writes it",
            )
        return cls(
            model_type=model_type,
            architectures=tuple(architectures),
            needs_remote_code="auto_map" in raw,
            quantization=_quantization(raw.get("quantization_config"), filename),
        )


def _quantization(value: Any, filename: str) -> Quantization | None:
    if value is None:
        return None
    fix = "write quantization_config as the quantization library saves it (a JSON object)"
    if not isinstance(value, dict):
        raise RepoFileInvalid(filename, f"quantization_config {preview(value)} is not a JSON object", fix)
    method = value.get("quant_method", "")
    if not _name(method):
        raise RepoFileInvalid(
            filename, f"quantization_config.quant_method {preview(method)} is not a method name", fix
        )
    bits = value.get("bits")
    if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool)):
        raise RepoFileInvalid(filename, f"quantization_config.bits {preview(bits)} is not an integer", fix)
    return Quantization(method=method.lower(), bits=bits)


@dataclass(frozen=True)
class TokenizerConfig:
    """What validation uses of tokenizer_config.json."""

    has_chat_template: bool

    @classmethod
    def parse(cls, text: str, filename: str = "tokenizer_config.json") -> TokenizerConfig:
        template = parse_json_object(text, filename).get("chat_template")
        if template is not None and not isinstance(template, str | list):
            raise RepoFileInvalid(
                filename,
                f"chat_template {preview(template)} is neither a template nor a list of named templates",
                'set chat_template to a Jinja template string (or a list of {"name", "template"} objects)',
            )
        return cls(has_chat_template=template_is_set(template))


@dataclass(frozen=True)
class ModelCard:
    """What validation uses of README.md: the license and base models its metadata declares, and its text."""

    license: str | None
    base_models: tuple[str, ...]
    body: str  # the text after the metadata, stripped

    @classmethod
    def parse(cls, text: str, filename: str = "README.md") -> ModelCard:
        metadata, body = split_model_card(text)
        licence = license_of(metadata)
        if licence is not None and (len(licence) > MAX_LICENSE_CHARS or CONTROL.search(licence)):
            raise RepoFileInvalid(
                filename,
                f"the license {preview(licence)} is not a license id",
                f"declare `license: <id>` with a Hub license id (at most {MAX_LICENSE_CHARS} characters)",
            )
        declared = metadata.get("base_model")
        bases = [] if declared is None else [declared] if isinstance(declared, str) else declared
        if (
            not isinstance(bases, list)
            or len(bases) > MAX_BASE_MODELS
            or not all(isinstance(b, str) and len(b) <= MAX_BASE_MODEL_CHARS for b in bases)
        ):
            raise RepoFileInvalid(
                filename,
                f"base_model {preview(declared)} in the metadata is not a model id or a list of model ids",
                "declare `base_model: ORG/NAME` (or a list of them) in the YAML metadata of README.md",
            )
        return cls(license=licence, base_models=tuple(bases), body=body)
