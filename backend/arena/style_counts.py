"""The style of a battle's two answers, as the public Chatbot Arena's style control counts it: the length and
the markdown headers, list items and bold spans of each side. Read only when style control asks for it
(``read_battles(path, style=True)``); the fit (style.py) turns the counts into its features.

A record's ``conv_metadata`` is used when present, as the public releases carry it: ``sum_assistant_a_tokens``
and ``sum_assistant_b_tokens``, ``header_count_a``/``_b`` (h1..h6), ``list_count_a``/``_b`` (ordered,
unordered), ``bold_count_a``/``_b`` (``**``, ``__``); a count given as a record is the sum of its values, as
the public code sums it. Without it, the counts come from the assistant turns of ``conversation_a`` and
``conversation_b`` (lists of {role, content}): markdown by the public code's patterns, over the turns joined by
newlines with the insides of ``` code blocks blanked first (markdown in code is not counted); length in
characters (Unicode code points), not tokens, since there is no tokenizer for arbitrary models. The feature is
the normalised difference (a - b) / (a + b + 1), so the unit nearly cancels (only the + 1 does not): a file
may mix battles with token counts and battles counted here.

This module is a leaf (battles.py imports it; it imports no arena module), so that reading stays under the fit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard

import numpy as np
import pyarrow as pa

from backend.errors import BattlesInvalid

FEATURES = ("length", "headers", "lists", "bold")
#: conv_metadata's fields for (side a, side b) of each feature, in the order of FEATURES.
METADATA_FIELDS = (
    ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    ("header_count_a", "header_count_b"),
    ("list_count_a", "list_count_b"),
    ("bold_count_a", "bold_count_b"),
)
#: The record fields style control reads.
FIELDS = ("conv_metadata", "conversation_a", "conversation_b")
#: The columns of ``Battles.style``: the features of side a, then those of side b.
COLUMNS = tuple(f"{feature}_{side}" for side in "ab" for feature in FEATURES)
#: conv_metadata's fields in the order of COLUMNS.
METADATA_ORDER = tuple(fields[side] for side in (0, 1) for fields in METADATA_FIELDS)
#: A count (tokens, characters, headers...) of one side of one battle: fits the int32 arrays.
MAX_COUNT = 1_000_000_000
#: Keys of a count given as a record (the public ones have 2 to 6).
MAX_KEYS = 64
#: Turns of one conversation.
MAX_TURNS = 10_000
#: Characters of one side's assistant turns, together.
MAX_ANSWER_CHARS = 10_000_000

NEEDS = (
    "style control needs, in every battle, conv_metadata with sum_assistant_a_tokens, sum_assistant_b_tokens, "
    "header_count_a/b, list_count_a/b and bold_count_a/b (as the public releases carry it), or conversation_a "
    "and conversation_b (lists of {role, content}); add them, or rate without style control"
)

_CODE_BLOCK = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)  # one of h1..h6: exactly that many #, then a space
_ORDERED = re.compile(r"^\s*\d+\.\s", re.MULTILINE)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.MULTILINE)
_BOLD = (re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__"))


def markdown_counts(text: str) -> tuple[int, int, int]:
    """Headers, list items (ordered and unordered) and bold spans (``**`` and ``__``) of an answer."""
    text = _CODE_BLOCK.sub("``````", text)  # the public code removes each block's inside, keeping the fences
    return (
        len(_HEADER.findall(text)),
        len(_ORDERED.findall(text)) + len(_UNORDERED.findall(text)),
        sum(len(bold.findall(text)) for bold in _BOLD),
    )


def style_counts(record: Mapping[str, Any], source: str, where: str) -> tuple[int, ...]:
    """The eight counts (COLUMNS) of one battle; ``where`` names the record in a refusal."""
    metadata = record.get("conv_metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise BattlesInvalid(
                source, f"{where}: conv_metadata is a {type(metadata).__name__}, not a record", NEEDS
            )
        return tuple(_count(metadata.get(field), field, source, where) for field in METADATA_ORDER)
    sides = []
    for field in ("conversation_a", "conversation_b"):
        conversation = record.get(field)
        if conversation is None:
            raise BattlesInvalid(source, f"{where}: {field} is missing, and so is conv_metadata", NEEDS)
        sides.append(_answer_counts(conversation, field, source, where))
    return (*sides[0], *sides[1])


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: object, field: str, source: str, where: str) -> int:
    """A count given as a number or as a record of numbers (None values are absent keys, as Parquet writes
    them when records differ in their keys). The checks run a million times: messages only when refused."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    if type(value) is dict and len(value) <= MAX_KEYS:
        total = 0
        for part in value.values():
            if type(part) is int and part >= 0:
                total += part
            elif part is not None:
                break
        else:
            if total <= MAX_COUNT:
                return total
    raise _refused(value, f"conv_metadata.{field}", source, where)


def _refused(value: object, field: str, source: str, where: str) -> BattlesInvalid:
    fix = f"give {field} as a count of 0 or more, or as a record of such counts (e.g. h1..h6); {NEEDS}"
    if value is None:
        return BattlesInvalid(source, f"{where}: {field} is missing", fix)
    if isinstance(value, dict):
        if len(value) > MAX_KEYS:
            return BattlesInvalid(source, f"{where}: {field} has {len(value):,} keys, over {MAX_KEYS}", fix)
        for key, part in value.items():
            if part is not None and not _is_count(part):
                return BattlesInvalid(source, f"{where}: {field}.{key} is {part!r}, not a count", fix)
        total = sum(part for part in value.values() if part is not None)
    elif _is_count(value):
        total = value
    else:
        return BattlesInvalid(source, f"{where}: {field} is {_shown(value)}, not a count", fix)
    return BattlesInvalid(source, f"{where}: {field} is {total:,}, over {MAX_COUNT:,}", fix)


def metadata_column_counts(column: pa.ChunkedArray) -> np.ndarray | None:
    """The counts (COLUMNS) of a Parquet conv_metadata column read as columns, not row by row (a million
    rows of nested records take ~20 s as Python objects): only when it is a struct column without nulls whose
    fields are integers, or structs of integers (nulls in those are absent keys), all within 0..MAX_COUNT.
    Otherwise None, and the rows are checked one by one, so that a refusal names its row."""
    if not pa.types.is_struct(column.type) or column.null_count:
        return None
    metadata = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    children = metadata.flatten()
    counts = np.zeros((len(metadata), len(METADATA_ORDER)), dtype=np.int64)
    for c, field in enumerate(METADATA_ORDER):
        index = metadata.type.get_field_index(field)
        if index < 0:
            return None
        child = children[index]
        if pa.types.is_integer(child.type) and not child.null_count:
            parts = [child]
        elif pa.types.is_struct(child.type) and not child.null_count and child.type.num_fields <= MAX_KEYS:
            parts = child.flatten()
            if not all(pa.types.is_integer(part.type) for part in parts):
                return None
            parts = [part.fill_null(0) for part in parts]
        else:
            return None
        for part in parts:
            values = part.to_numpy(zero_copy_only=False)
            if values.size and (values.min() < 0 or values.max() > MAX_COUNT):
                return None
            counts[:, c] += values.astype(np.int64)
    if counts.size and counts.max() > MAX_COUNT:
        return None
    return counts.astype(np.int32)


def _answer_counts(conversation: object, field: str, source: str, where: str) -> tuple[int, int, int, int]:
    """Length (characters) and markdown counts of the assistant turns of a conversation."""
    fix = f"write {field} as a list of {{role, content}} records, content a string; {NEEDS}"
    if not isinstance(conversation, list):
        raise BattlesInvalid(
            source, f"{where}: {field} is a {type(conversation).__name__}, not a list of turns", fix
        )
    if len(conversation) > MAX_TURNS:
        raise BattlesInvalid(
            source, f"{where}: {field} has {len(conversation):,} turns, over {MAX_TURNS:,}", fix
        )
    answers, characters = [], 0
    for number, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise BattlesInvalid(
                source, f"{where}: {field} turn {number} is a {type(turn).__name__}, not a record", fix
            )
        role = turn.get("role")
        if not isinstance(role, str):
            problem = "is missing" if role is None else f"is a {type(role).__name__}, not a string"
            raise BattlesInvalid(source, f"{where}: {field} turn {number}: role {problem}", fix)
        if role != "assistant":
            continue
        content = turn.get("content")
        if not isinstance(content, str):
            problem = "is missing" if content is None else f"is a {type(content).__name__}, not a string"
            raise BattlesInvalid(source, f"{where}: {field} turn {number}: content {problem}", fix)
        characters += len(content)
        if characters > MAX_ANSWER_CHARS:
            raise BattlesInvalid(
                source,
                f"{where}: {field}'s assistant turns have over {MAX_ANSWER_CHARS:,} characters",
                f"shorten the answers, or give conv_metadata's counts instead; {NEEDS}",
            )
        answers.append(content)
    return (characters, *markdown_counts("\n".join(answers)))


def _shown(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return f"a {type(value).__name__}"
