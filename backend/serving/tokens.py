"""A token's text and bytes, as OpenAI's logprobs give them.

A byte-level BPE token (GPT-2, Llama 3, Qwen) may hold part of a UTF-8 character, which decoding it alone
turns into U+FFFD; its bytes are recovered exactly through the byte-to-character table the tokenizer uses.
Sentencepiece byte-fallback tokens (<0xE2>) are their byte; word pieces with ▁ are text with a space.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: the printable character each byte is written as."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def _decoder_types(tokenizer: Any) -> set[str]:
    """The decoder types of a fast tokenizer's pipeline (ByteLevel, Metaspace, ByteFallback...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    found: set[str] = set()
    stack = [decoder]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                found.add(node["type"])
            stack.extend(node.get("decoders") or [])
    return found


class TokenText:
    """Token id -> (text, bytes) for one tokenizer; each id is worked out once."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        types = _decoder_types(tokenizer)
        self.byte_level = "ByteLevel" in types
        self.metaspace = bool(types & {"Metaspace", "Replace"})
        self.added = {int(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        self._cache: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token_id: int) -> tuple[str, bytes]:
        found = self._cache.get(token_id)
        if found is None:
            raw = self._bytes(token_id)
            found = (raw.decode("utf-8", errors="replace"), raw)
            self._cache[token_id] = found
        return found

    def _bytes(self, token_id: int) -> bytes:
        if token_id in self.added:  # added and special tokens are stored as their text, never byte-mapped
            return self.added[token_id].encode("utf-8")
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            if self.byte_level:
                table = _unicode_to_byte()
                if all(char in table for char in piece):
                    return bytes(table[char] for char in piece)
            byte = _BYTE_TOKEN.fullmatch(piece)
            if byte:
                return bytes([int(byte.group(1), 16)])
            if self.metaspace:
                return piece.replace("▁", " ").encode("utf-8")
        return str(self.tokenizer.decode([token_id])).encode("utf-8")
