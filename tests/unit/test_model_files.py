"""Parsers of repository files: they must count what the headers declare and never crash on bad input."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from backend.errors import RepoFileInvalid
from backend.hub.model_files import (
    has_chat_template,
    license_of,
    parameter_count,
    parse_safetensors_header,
    read_safetensors_header,
    split_model_card,
)
from backend.modelbuilder import write_sparse_safetensors


def _prefixed(body: bytes) -> bytes:
    return struct.pack("<Q", len(body)) + body


def _raw(header: object) -> bytes:
    return _prefixed(json.dumps(header).encode())


def _tensor(dtype: str = "F32", shape: list[int] | None = None, offsets: list[int] | None = None) -> dict:
    return {"dtype": dtype, "shape": [2, 3] if shape is None else shape, "data_offsets": offsets or [0, 24]}


def test_parses_a_real_safetensors_file_from_bytes_and_from_a_file_object() -> None:
    data = save({"a": np.zeros((2, 3), np.float32), "b": np.zeros(5, np.int32)}, metadata={"format": "pt"})
    header = parse_safetensors_header(data, "model.safetensors")
    assert header["a"]["shape"] == [2, 3] and header["b"]["dtype"] == "I32"
    assert header["__metadata__"] == {"format": "pt"}
    assert parse_safetensors_header(io.BytesIO(data), "model.safetensors") == header


def test_bytes_after_the_header_are_ignored_so_a_range_response_can_be_passed() -> None:
    data = _raw({"w": _tensor()}) + b"\x00" * 24 + b"trailing"
    assert parse_safetensors_header(data, "x.safetensors")["w"]["shape"] == [2, 3]


def test_reading_a_header_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    write_sparse_safetensors(path, "w", 10**12)  # 2 TB, a hole on disk
    assert read_safetensors_header(path)["w"]["shape"] == [10**12]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x01\x00", "shorter than the 8-byte"),
        (struct.pack("<Q", 0), "header length 0"),
        (struct.pack("<Q", 2**40) + b"{}", "header length"),
        (struct.pack("<Q", 100) + b"{}", "declares 100 bytes but only 2"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (struct.pack("<Q", 5) + b"{abc}", "not valid UTF-8 JSON"),
        (_raw([1, 2]), "not a JSON object"),
        (_raw({"w": [1]}), "tensor 'w' is not a JSON object"),
        (_raw({"w": {"shape": [1], "data_offsets": [0, 4]}}), "tensor 'w' has no dtype"),
        (_raw({"w": _tensor(shape=[-1])}), "no valid shape"),
        (_raw({"w": _tensor(shape=[True])}), "no valid shape"),
        (_raw({"w": _tensor(shape="2x3")}), "no valid shape"),  # type: ignore[arg-type]
        (_raw({"w": _tensor(offsets=[24, 0])}), "no valid data_offsets"),
        (_raw({"w": _tensor(offsets=[0, 1, 2])}), "no valid data_offsets"),
        (_raw({"w": _tensor(offsets=[0, 8])}), "spans 8 bytes, but F32 [2, 3] needs 24"),
        (_raw({"__metadata__": "pt", "w": _tensor()}), "__metadata__ is not a JSON object"),
        # Sizes beyond what safetensors' unsigned 64-bit offsets can hold: counting them would overflow.
        (_raw({"w": _tensor(shape=[10**400], offsets=[0, 4 * 10**400])}), "no valid shape"),
        (_raw({"w": _tensor(shape=[2**64], offsets=[0, 2**66])}), "no valid shape"),
        (_raw({"w": _tensor(shape=[2**62], offsets=[0, 2**64])}), "no valid data_offsets"),
        (_raw({"w": _tensor(dtype="Q9", shape=[10**400], offsets=[0, 4])}), "dtype 'Q9', which safetensors"),
        (_raw({"w": _tensor(dtype="F4", offsets=[0, 2])}), "spans 2 bytes, but F4 [2, 3] needs 3"),
        (_prefixed(b'{"w": ' + b"9" * 5000 + b"}"), "not valid UTF-8 JSON"),  # an int too long to parse
        (_prefixed(b"[" * 100_000 + b"]" * 100_000), "not valid UTF-8 JSON"),  # nested too deep
        (_raw({"x" * 10_000: [1]}), "tensor 'xxxx"),  # named, but not echoed whole
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
def test_malformed_headers_are_refused_with_the_file_name(data: bytes, problem: str) -> None:
    """Each malformation is an invalid file naming the problem (never an OverflowError or RecursionError)."""
    with pytest.raises(RepoFileInvalid, match=r"model-00001\.safetensors") as caught:
        parse_safetensors_header(data, "model-00001.safetensors")
    assert caught.value.filename == "model-00001.safetensors"
    assert problem in str(caught.value)
    assert len(caught.value.message) < 500


def test_sub_byte_dtypes_are_checked_by_bits() -> None:
    header = parse_safetensors_header(_raw({"w": _tensor(dtype="F4", offsets=[0, 3])}), "x")
    assert header["w"]["dtype"] == "F4"
    six = parse_safetensors_header(_raw({"w": _tensor(dtype="F6_E2M3", shape=[4], offsets=[0, 3])}), "x")
    assert six["w"]["shape"] == [4]


def test_parameter_count_sums_every_tensor_of_every_file() -> None:
    headers = {
        "a.safetensors": {
            "__metadata__": {"format": "pt"},
            "x": _tensor(shape=[4, 8]),
            "s": _tensor(shape=[]),
        },
        "b.safetensors": {"y": _tensor(dtype="BF16", shape=[10])},
    }
    assert parameter_count(headers) == 32 + 1 + 10
    assert parameter_count({}) == 0


def test_gptq_counts_packed_int32_tensors_as_the_weights_they_replace() -> None:
    # A 4-bit qweight packs 8 values per int32: [in * 4 / 32, out] stands for an [out, in] weight.
    headers = {"m": {"q.qweight": _tensor("I32", [8, 32]), "q.scales": _tensor("F16", [1, 32])}}
    assert parameter_count(headers, gptq_bits=4) == 64 * 32 + 32
    assert parameter_count(headers, gptq_bits=8) == 8 * 32 * 4 + 32
    assert parameter_count(headers) == 8 * 32 + 32


def test_model_card_front_matter_and_body_are_split() -> None:
    metadata, body = split_model_card("---\nlicense: mit\ntags: [a, b]\n---\n\n# Title\n\nText.\n")
    assert metadata == {"license": "mit", "tags": ["a", "b"]}
    assert body == "# Title\n\nText."


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ("# Only a body\n", "# Only a body"),
        ("---\nlicense: [unclosed\n---\nBody", "Body"),  # malformed YAML
        ("---\n- a list\n---\nBody", "Body"),  # YAML that is not a mapping
        ("---\n!!python/object:os.system x\n---\nBody", "Body"),  # safe_load refuses Python tags
        ("", ""),
        ("---\nno closing line", "---\nno closing line"),
    ],
)
def test_model_cards_without_usable_metadata_give_an_empty_dict(text: str, body: str) -> None:
    assert split_model_card(text) == ({}, body)


def test_model_card_with_windows_line_endings() -> None:
    assert split_model_card("---\r\nlicense: mit\r\n---\r\nBody\r\n") == ({"license": "mit"}, "Body")


@pytest.mark.parametrize(
    ("config", "files", "expected"),
    [
        ({"chat_template": "{{ messages }}"}, (), True),
        ({"chat_template": [{"name": "default", "template": "{{ x }}"}]}, (), True),
        ({"chat_template": [{"name": "default", "template": "  "}]}, (), False),
        ({"chat_template": []}, (), False),
        ({"chat_template": "   "}, (), False),
        ({"chat_template": None}, (), False),
        ({}, (), False),
        (None, (), False),
        ({}, ("chat_template.jinja",), True),
        (None, ("chat_template.json",), True),
        ({}, ("sub/chat_template.jinja",), False),
    ],
)
def test_chat_template_is_found_where_transformers_looks(
    config: dict | None, files: tuple, expected: bool
) -> None:
    text = None if config is None else json.dumps(config)
    assert has_chat_template(text, files) is expected


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"', ""])
def test_a_malformed_tokenizer_config_has_no_chat_template(text: str) -> None:
    assert has_chat_template(text, ()) is False


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"license": "apache-2.0"}, "apache-2.0"),
        ({"license": " mit "}, "mit"),
        ({"license": ["llama3", "mit"]}, "llama3"),
        ({"license": "other", "license_name": "my-license", "license_link": "LICENSE"}, "my-license"),
        ({"license": "other"}, "other"),
        ({"license_name": "custom", "license_link": "https://example.org/l"}, "custom"),
        ({"license_name": "custom"}, None),
        ({"license": ""}, None),
        ({"license": 42}, None),
        ({}, None),
    ],
)
def test_license_from_card_metadata(metadata: dict, expected: str | None) -> None:
    assert license_of(metadata) == expected
