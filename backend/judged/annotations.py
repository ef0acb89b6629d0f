"""AlpacaEval-format annotations, read once at the edge into typed, size-checked records.

The file is what alpaca-eval writes as ``results/<model>/<annotator>/annotations.json``: a JSON list, one
record per instruction, with ``instruction``, ``output_1`` and ``generator_1`` (the reference),
``output_2`` and ``generator_2`` (the evaluated model) and ``preference``. Other fields (``annotator``,
``raw_completion``, prices, times...) are tolerated and not kept. Duplicate instructions are allowed, as
alpaca-eval allows them.

``preference`` is the judge's verdict: a number from 1 (output_1 better) to 2 (output_2 better), 1.5 or 0 for
a draw, and null, NaN or no field at all when the judge gave none (alpaca-eval leaves those records out of
every count but ``avg_length``). Anything else is refused with the record's index, the field and the fix.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.domain import preview
from backend.errors import AnnotationsInvalid

MIB = 2**20
#: The whole file: AlpacaEval's own annotations of its 805 instructions, judge completions included, are
#: a few MB.
MAX_FILE_BYTES = 256 * MIB
#: Records: AlpacaEval has 805 instructions; other judged sets are of that order.
MAX_RECORDS = 10_000
#: An output (and an instruction), in characters: the longest AlpacaEval outputs are tens of thousands.
MAX_TEXT_CHARS = 200_000
#: A generator (model) name.
MAX_NAME_CHARS = 256

TEXT_FIELDS = ("instruction", "output_1", "output_2")
NAME_FIELDS = ("generator_1", "generator_2")
FORMAT = (
    "a JSON list of records, each with instruction, output_1, generator_1, output_2, generator_2 (strings) and "
    "preference (1 to 2, 0 or 1.5 for a draw, null when not judged), as alpaca-eval writes annotations.json"
)
PREFERENCE_RULE = (
    "a number from 1 (output_1 better) to 2 (output_2 better), 0 or 1.5 for a draw, or null (or no "
    "preference field) when the judge gave no verdict"
)


@dataclass(frozen=True)
class Annotation:
    """One judged pair; ``preference`` is None where the judge gave no verdict."""

    instruction: str
    output_1: str
    generator_1: str
    output_2: str
    generator_2: str
    preference: float | None


@dataclass(frozen=True)
class Annotations:
    """The records of one file: one evaluated model (generator_2) against one reference (generator_1)."""

    records: tuple[Annotation, ...]

    @property
    def generator_1(self) -> str:
        return self.records[0].generator_1

    @property
    def generator_2(self) -> str:
        return self.records[0].generator_2


class _Object(dict[str, Any]):
    """A JSON object that remembers which of its keys appeared more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.duplicates = tuple(repeated)
    return obj


def read_limited(path: Path, limit: int) -> bytes | None:
    """The bytes of the file at ``path``, or None when it has more than ``limit``: refused unread when its
    size says so, and the read is bounded for files whose size does not (pipes)."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            return None
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def read_annotations(path: Path, source: str | None = None) -> Annotations:
    """The annotations in ``path``; ``source`` is how messages name the file (the name the user gave)."""
    source = source if source is not None else str(path)
    try:
        data = read_limited(path, MAX_FILE_BYTES)
    except FileNotFoundError as exc:
        raise AnnotationsInvalid(source, "no such file", "give the path of an annotations.json file") from exc
    except IsADirectoryError as exc:
        raise AnnotationsInvalid(
            source, "a folder, not a file", "give the annotations.json inside it"
        ) from exc
    except OSError as exc:
        raise AnnotationsInvalid(
            source,
            f"cannot be read ({exc.strerror or type(exc).__name__})",
            "check the file and its permissions",
        ) from exc
    if data is None:
        raise AnnotationsInvalid(
            source,
            f"larger than {MAX_FILE_BYTES // MIB} MiB",
            f"score at most {MAX_RECORDS} records, drop fields the metrics do not read (raw_completion...)",
        )
    return parse_annotations(data, source)


def parse_annotations(data: bytes, source: str) -> Annotations:
    """The annotations in ``data`` (a file's bytes)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationsInvalid(
            source, f"not UTF-8 text (byte {exc.start} cannot be decoded)", "save the file as UTF-8 JSON"
        ) from exc
    try:
        value = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise AnnotationsInvalid(
            source, f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})", f"write {FORMAT}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise AnnotationsInvalid(
            source,
            f"not valid JSON ({type(exc).__name__}: nested or sized beyond what a parser accepts)",
            f"write {FORMAT}",
        ) from exc
    if not isinstance(value, list):
        kind = "object" if isinstance(value, dict) else type(value).__name__
        raise AnnotationsInvalid(source, f"a JSON {kind}, not a list of records", f"write {FORMAT}")
    if not value:
        raise AnnotationsInvalid(source, "no records", f"write {FORMAT}")
    if len(value) > MAX_RECORDS:
        raise AnnotationsInvalid(
            source,
            f"{len(value)} records, more than the {MAX_RECORDS} scored at once",
            f"split the file: score at most {MAX_RECORDS} records (one model's annotations) at a time",
        )
    records = tuple(_record(raw, i, source) for i, raw in enumerate(value))
    for field in NAME_FIELDS:
        names = sorted({getattr(r, field) for r in records})
        if len(names) > 1:
            shown = ", ".join(preview(n, 40) for n in names[:3]) + (", ..." if len(names) > 3 else "")
            raise AnnotationsInvalid(
                source,
                f"records name {len(names)} different {field} ({shown})",
                "score one model against one reference at a time: one file per generator_2, all with the "
                "same generator_1",
            )
    return Annotations(records)


def _record(raw: Any, index: int, source: str) -> Annotation:
    where = f"record {index} (counting from 0)"
    if not isinstance(raw, dict):
        raise AnnotationsInvalid(
            source,
            f"{where} is {_describe(raw)}, not an object",
            f"make every element of the list an object with {', '.join((*TEXT_FIELDS, *NAME_FIELDS))}, preference",
        )
    duplicates = getattr(raw, "duplicates", ())
    if duplicates:
        raise AnnotationsInvalid(
            source,
            f"{where} has the field {duplicates[0]!r} more than once",
            "keep one value of each field in a record",
        )
    texts: dict[str, str] = {}
    for field, limit in [(f, MAX_TEXT_CHARS) for f in TEXT_FIELDS] + [
        (f, MAX_NAME_CHARS) for f in NAME_FIELDS
    ]:
        if field not in raw:
            raise AnnotationsInvalid(
                source,
                f"{where} has no {field}",
                f"give every record {field} (a string), as alpaca-eval writes it",
            )
        value = raw[field]
        if not isinstance(value, str):
            raise AnnotationsInvalid(
                source,
                f"{where}: {field} is {_describe(value)}, not a string",
                f"give {field} as a JSON string",
            )
        if len(value) > limit:
            raise AnnotationsInvalid(
                source,
                f"{where}: {field} has {len(value)} characters, more than {limit}",
                f"shorten {field} to at most {limit} characters",
            )
        if field in NAME_FIELDS and not value.strip():
            raise AnnotationsInvalid(source, f"{where}: {field} is empty", f"name the model in {field}")
        texts[field] = value
    return Annotation(preference=_preference(raw.get("preference"), where, source), **texts)


def _preference(value: Any, where: str, source: str) -> float | None:
    if value is None:
        return None
    fix = f"give preference as {PREFERENCE_RULE}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnnotationsInvalid(source, f"{where}: preference is {_describe(value)}, not a number", fix)
    try:
        number = float(value)
    except OverflowError as exc:  # an integer of hundreds of digits
        raise AnnotationsInvalid(source, f"{where}: preference is {_describe(value)}", fix) from exc
    if math.isnan(number):
        return None
    if not (number == 0 or 1 <= number <= 2):
        raise AnnotationsInvalid(
            source, f"{where}: preference is {_describe(value)}, outside 1 to 2 and not 0", fix
        )
    return number


def _describe(value: Any) -> str:
    """A JSON value as a message names it, cut short: "null", "the number 3.0", "the string 'abc'"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {preview(value, 40)}"
    return f"the number {preview(value, 40)}"
