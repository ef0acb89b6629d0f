"""Pure functions over the files of a model repository: safetensors headers, model cards, tokenizer configs.

Repositories are untrusted input. Everything here parses JSON, YAML (safe loader) and the safetensors header,
and nothing else: no weights are read, nothing is unpickled or executed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml

from backend.domain import preview
from backend.errors import InvalidInput, RepoFileInvalid, RepoFileRefused

#: A header longer than this is refused; the largest real ones (thousands of tensors) are a few MB.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
#: safetensors stores offsets as unsigned 64-bit integers: no size or dimension reaches this.
_U64_LIMIT = 2**64

#: Bits per element of every dtype safetensors defines (0.8), to check that data_offsets span the shape.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
_SAFETENSORS_FIX = "re-upload the weights with save_pretrained(..., safe_serialization=True)"

# The Hub's own rule for front matter (huggingface_hub.repocard): a leading `---` line, YAML, a `---` line.
_FRONT_MATTER = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")


def repo_relative_path(name: str, what: str = "file name") -> PurePosixPath:
    """A path inside a repository from untrusted input; refuses anything that could leave the repository."""
    path = PurePosixPath(name)
    if not name or "\\" in name or "\x00" in name or path.is_absolute() or ".." in path.parts:
        raise InvalidInput(f"refused {what} {name!r}: it must be a relative path inside the repository")
    return path


def too_large(filename: str, size: int, limit: int) -> RepoFileRefused:
    """The refusal of a file over its size limit (what every model source raises, unread)."""
    return RepoFileRefused(
        filename, f"it is {size:,} bytes, above the {limit:,}-byte limit for a file read in validation"
    )


def _malformed(name: str, problem: str) -> RepoFileInvalid:
    return RepoFileInvalid(name, f"malformed safetensors header: {problem}", _SAFETENSORS_FIX)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value: Any) -> bool:
    return _is_int(value) and 0 <= value < _U64_LIMIT


def validate_safetensors_header(header: Any, name: str) -> dict[str, Any]:
    """Check a decoded header has the shape the safetensors format requires, so counting can trust it.

    Each tensor needs a dtype safetensors defines, a shape of sizes below 2**64 and data_offsets
    [begin, end] (below 2**64) whose span is exactly what dtype and shape need. Raises RepoFileInvalid.
    """
    if not isinstance(header, dict):
        raise _malformed(name, "the header is not a JSON object")
    for key, entry in header.items():
        shown = preview(key)
        if key == "__metadata__":
            if not isinstance(entry, dict):
                raise _malformed(name, "__metadata__ is not a JSON object")
            continue
        if not isinstance(entry, dict):
            raise _malformed(name, f"tensor {shown} is not a JSON object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or not dtype:
            raise _malformed(name, f"tensor {shown} has no dtype")
        bits = DTYPE_BITS.get(dtype)
        if bits is None:
            raise _malformed(
                name, f"tensor {shown} has dtype {preview(dtype)}, which safetensors does not define"
            )
        if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
            raise _malformed(name, f"tensor {shown} has no valid shape (a list of non-negative integers)")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_size(o) for o in offsets)
            or not offsets[0] <= offsets[1]
        ):
            raise _malformed(name, f"tensor {shown} has no valid data_offsets [begin, end]")
        span, needed_bits = offsets[1] - offsets[0], math.prod(shape) * bits
        if span * 8 != needed_bits:
            raise _malformed(
                name,
                f"tensor {shown} spans {span} bytes, but {dtype} {preview(shape)} needs {needed_bits / 8:g}",
            )
    return header


def _header_length(prefix: bytes, name: str) -> int:
    if len(prefix) < 8:
        raise _malformed(name, "the file is shorter than the 8-byte header length")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length < 2 or length > MAX_SAFETENSORS_HEADER_BYTES:
        raise _malformed(name, f"header length {length} is outside 2..{MAX_SAFETENSORS_HEADER_BYTES} bytes")
    return length


def _decode(raw: bytes, name: str) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, an int too long to parse
        raise _malformed(name, f"the header is not valid UTF-8 JSON ({_first_line(exc)})") from exc
    return validate_safetensors_header(header, name)


def parse_safetensors_header(data: bytes | BinaryIO, name: str) -> dict[str, Any]:
    """Parse the header of a safetensors file: an 8-byte little-endian length N, then N bytes of JSON.

    ``data`` is either the first bytes of the file (extra bytes after the header are ignored, so a range
    response can be passed as is) or a binary file object positioned at the start of the file.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
        length = _header_length(data, name)
        raw = data[8 : 8 + length]
    else:
        length = _header_length(data.read(8), name)
        raw = data.read(length)
    if len(raw) < length:
        raise _malformed(name, f"the header declares {length} bytes but only {len(raw)} follow")
    return _decode(raw, name)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Read only the header of a local safetensors file, however large the file is."""
    with open(path, "rb") as file:
        return parse_safetensors_header(file, path.name)


def parameter_count(headers: dict[str, dict[str, Any]], gptq_bits: int | None = None) -> int:
    """The number of parameters declared by safetensors headers (file name -> header), summed over files.

    With ``gptq_bits``, every I32 tensor is taken as GPTQ-packed and counts ``32 // gptq_bits`` parameters per
    element, so a ``qweight`` counts as the unquantized weight it replaces (exactly so for 2, 4 and 8 bits).
    The result is then the original model's count plus the quantization bookkeeping: ``scales`` (F16,
    groups x out), ``qzeros`` (I32, unpacked to groups x out) and ``g_idx`` (I32 [in], multiplied like the
    rest), a small fraction of a real model.
    """
    total = 0
    for header in headers.values():
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = math.prod(entry["shape"])
            if gptq_bits and entry["dtype"] == "I32":
                count *= 32 // gptq_bits
            total += count
    return total


def split_model_card(text: str) -> tuple[dict[str, Any], str]:
    """Split a model card into its YAML front matter and its body (stripped, front matter removed).

    Malformed or non-mapping YAML gives an empty dict: a bad card should fail a validation rule with a
    message, not crash the validator.
    """
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text.strip()
    body = text[match.end() :].strip()
    try:
        metadata = yaml.safe_load(match.group(2))
    except (yaml.YAMLError, ValueError, RecursionError):
        return {}, body
    return (metadata if isinstance(metadata, dict) else {}), body


#: Files in which transformers finds a chat template besides tokenizer_config.json.
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def has_template_file(files: tuple[str, ...]) -> bool:
    """Whether a repository has a chat template in a file of its own (at its root, where transformers looks)."""
    return any(name in files for name in CHAT_TEMPLATE_FILES)


def has_chat_template(tokenizer_config_text: str | None, files: tuple[str, ...]) -> bool:
    """Whether transformers would find a chat template: in tokenizer_config.json or in its own file."""
    if has_template_file(files):
        return True
    if not tokenizer_config_text:
        return False
    try:
        config = json.loads(tokenizer_config_text)
    except (ValueError, RecursionError):
        return False
    return isinstance(config, dict) and template_is_set(config.get("chat_template"))


def template_is_set(template: Any) -> bool:
    """Whether a tokenizer config's ``chat_template`` value holds a template: a non-blank string, or a list
    of ``{"name", "template"}`` entries one of which is non-blank."""
    if isinstance(template, str):
        return bool(template.strip())
    if isinstance(template, list):
        return any(
            isinstance(item, dict) and isinstance(item.get("template"), str) and item["template"].strip()
            for item in template
        )
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _text(value: Any) -> str | None:
    if isinstance(value, list):  # the Hub accepts a list of licenses; the first one names the model's
        value = next((item for item in value if isinstance(item, str) and item.strip()), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def license_of(metadata: dict[str, Any]) -> str | None:
    """The model's license from card metadata: ``license``, or ``license_name`` when it is "other" or absent.

    A ``license_name`` without ``license`` is only taken together with a ``license_link``, the Hub's way to
    declare a custom license.
    """
    license_id = _text(metadata.get("license"))
    name = _text(metadata.get("license_name"))
    if license_id == "other":
        return name or license_id
    if license_id is None and name and _text(metadata.get("license_link")):
        return name
    return license_id
