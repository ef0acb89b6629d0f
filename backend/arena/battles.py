"""Arena battles, read once at the edge into compact arrays.

The format is the public Chatbot Arena's battle release: records with ``model_a``, ``model_b`` (strings) and
``winner`` (``model_a``, ``model_b``, ``tie`` or ``tie (bothbad)``). Other fields (``judge``, ``turn``,
``anony``, ``language``, ``tstamp``, ``conversation_a``/``conversation_b``, ``question_id``...) are tolerated
and not kept; the ones the public release names are type-checked when present. The file is a JSON list of
records (``.json``), JSON lines (``.jsonl``), CSV with a header (``.csv``) or Parquet (``.parquet``); the suffix
chooses. A bad record is refused with its index, the field and the fix; so is a model's battle against itself.

Battles are kept as three numpy arrays (model indices and an outcome code) over a sorted tuple of model
names, so a million battles cost a few megabytes and pool into counts in milliseconds. Style control's counts
(``conv_metadata``, or the conversations: style_counts.py) are read only when asked (``style=True``), into
one more array of eight int32 counts a battle; a battle without them is then refused. In CSV, those fields
are JSON text in their cells; in Parquet, nested columns or JSON text.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.arena.style_counts import COLUMNS as STYLE_COLUMNS
from backend.arena.style_counts import FIELDS as STYLE_FIELDS
from backend.arena.style_counts import metadata_column_counts, style_counts
from backend.errors import BattlesInvalid

GIB = 2**30
#: The whole file: the public releases (with conversations) are a few GB; JSON is parsed whole in memory.
MAX_FILE_BYTES = 8 * GIB
#: Battles: the public arena has a few million; this leaves room and bounds memory (~200 MB of arrays).
MAX_BATTLES = 20_000_000
#: Distinct models: the fit solves a dense system of this size (the public arena has a few hundred).
MAX_MODELS = 2_000
#: A model name, in characters.
MAX_NAME_CHARS = 256
#: A short text field (judge, language), in characters.
MAX_SHORT_CHARS = 1_024

#: Outcome codes, in the arrays.
A_WINS, B_WINS, TIE = 0, 1, 2
#: The public arena's winner values and their outcome; "tie (bothbad)" is a tie.
WINNERS = {"model_a": A_WINS, "model_b": B_WINS, "tie": TIE, "tie (bothbad)": TIE}
REQUIRED = ("model_a", "model_b", "winner")
#: Fields the public release has, checked when present (None is accepted as absent).
OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "judge": (str,),
    "language": (str,),
    "anony": (bool,),
    "turn": (int,),
    "tstamp": (int, float),
}
SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
FORMAT = (
    "records with model_a and model_b (model names, at most 256 characters) and winner (model_a, model_b, "
    "tie or tie (bothbad)), as the public Chatbot Arena releases them"
)
WINNER_RULE = "winner must be one of model_a, model_b, tie, tie (bothbad)"


@dataclass(frozen=True)
class Battles:
    """Battles over ``models`` (sorted names): ``model_a[k]`` and ``model_b[k]`` index ``models``,
    ``outcome[k]`` is A_WINS, B_WINS or TIE; ``style[k]`` the battle's counts (STYLE_COLUMNS), when read
    with ``style=True``."""

    models: tuple[str, ...]
    model_a: np.ndarray
    model_b: np.ndarray
    outcome: np.ndarray
    style: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.outcome.shape[0])

    def per_model(self) -> np.ndarray:
        """Battles each model fought, in the order of ``models``."""
        n = len(self.models)
        return np.bincount(self.model_a, minlength=n) + np.bincount(self.model_b, minlength=n)

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], source: str = "battles", *, style: bool = False
    ) -> Battles:
        """Battles from records in memory (what a JSON file holds), checked like a file's."""
        return _from_records(enumerate(records), source, lambda i: f"record {i}", style)


def battles_of_columns(
    model_a: Sequence[str], model_b: Sequence[str], winner: Sequence[str], source: str = "battles"
) -> Battles:
    """Battles from three columns in memory (the arena's stored votes), checked like a file's."""
    return _encode(
        pa.array(model_a, pa.string()),
        pa.array(model_b, pa.string()),
        pa.array(winner, pa.string()),
        source,
        lambda i: f"battle {i}",
    )


def read_battles(path: Path, source: str | None = None, *, style: bool = False) -> Battles:
    """The battles of a file; ``source`` names it in errors (default: the path). ``style``: read style
    control's counts too (every battle must have them)."""
    name = source or str(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BattlesInvalid(
            name,
            f"the format is chosen by the file's suffix, and '{path.suffix or '(none)'}' is none of "
            f"{', '.join(SUFFIXES)}",
            "rename the file to end in .json (a JSON list of records), .jsonl (one record a line), .csv "
            "(a header line) or .parquet",
        )
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise BattlesInvalid(
            name, f"cannot be read ({exc.strerror})", "give the path of a battles file"
        ) from exc
    if size > MAX_FILE_BYTES:
        raise BattlesInvalid(
            name,
            f"is {size / GIB:.1f} GiB, over the {MAX_FILE_BYTES // GIB} GiB limit",
            "drop the fields not read (model_a, model_b and winner are; with style control, conv_metadata, "
            "or the conversations without it), or write Parquet",
        )
    if suffix == ".json":
        return _read_json(path, name, style)
    if suffix == ".jsonl":
        return _read_jsonl(path, name, style)
    return _read_columns(path, name, suffix, style)


def _loads() -> Callable[[bytes], Any]:
    try:
        import orjson
    except ImportError:
        return json.loads
    loads: Callable[[bytes], Any] = orjson.loads
    return loads


def _read_json(path: Path, name: str, style: bool) -> Battles:
    try:
        data = _loads()(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BattlesInvalid(name, f"is not valid JSON ({exc})", f"write {FORMAT}, as a JSON list") from exc
    if not isinstance(data, list):
        raise BattlesInvalid(
            name, f"is a JSON {type(data).__name__}, not a list of records", f"write {FORMAT}, as a JSON list"
        )
    return _from_records(enumerate(data), name, lambda i: f"record {i}", style)


def _read_jsonl(path: Path, name: str, style: bool) -> Battles:
    loads = _loads()

    def records() -> Iterable[tuple[int, Any]]:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue  # blank lines (a trailing newline) are not records
                try:
                    yield number, loads(line)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise BattlesInvalid(
                        name, f"line {number} is not valid JSON ({exc})", "write one JSON record a line"
                    ) from exc

    return _from_records(records(), name, lambda number: f"line {number}", style)


def _from_records(
    records: Iterable[tuple[int, Any]], name: str, label: Callable[[int], str], style: bool
) -> Battles:
    """``records``: (its number in the file, the record); ``label`` names a record by its number."""
    columns: tuple[list[str], list[str], list[str]] = ([], [], [])
    numbers: list[int] = []
    counts = array("i")  # int32, flat: a million battles' style in 32 MB
    for number, record in records:
        if len(numbers) >= MAX_BATTLES:
            raise BattlesInvalid(
                name, f"has more than {MAX_BATTLES:,} battles", "split the file, or keep the battles you rate"
            )
        if not isinstance(record, dict):
            raise BattlesInvalid(
                name, f"{label(number)} is a {type(record).__name__}, not a record", f"write {FORMAT}"
            )
        for field, column in zip(REQUIRED, columns, strict=True):
            value = record.get(field)
            if not isinstance(value, str):
                problem = "is missing" if value is None else f"is a {type(value).__name__}, not a string"
                raise BattlesInvalid(
                    name, f"{label(number)}: {field} {problem}", f"give every record {FORMAT}"
                )
            column.append(value)
        numbers.append(number)
        for field, types in OPTIONAL_TYPES.items():
            value = record.get(field)
            if value is None:
                continue
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                expected = " or ".join(t.__name__ for t in types)
                raise BattlesInvalid(
                    name,
                    f"{label(number)}: {field} is a {type(value).__name__}, not {expected}",
                    f"write {field} as {expected}, or leave it out (it is not used)",
                )
            if isinstance(value, str) and len(value) > MAX_SHORT_CHARS:
                raise BattlesInvalid(
                    name,
                    f"{label(number)}: {field} has {len(value):,} characters, over {MAX_SHORT_CHARS:,}",
                    f"shorten {field}, or leave it out (it is not used)",
                )
        if style:
            counts.extend(style_counts(record, name, label(number)))
    a, b, winner = (pa.array(column, pa.string()) for column in columns)
    return _encode(a, b, winner, name, lambda i: label(numbers[i]), _style_array(counts) if style else None)


def _style_array(counts: array[int]) -> np.ndarray:
    return np.frombuffer(counts, dtype=np.int32).reshape(-1, len(STYLE_COLUMNS))


def _read_columns(path: Path, name: str, suffix: str, style: bool) -> Battles:
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            missing = [field for field in REQUIRED if field not in schema.names]
            if missing:
                raise BattlesInvalid(
                    name, f"has no column {', '.join(missing)}", f"write a table of {FORMAT}"
                )
            for field, types in OPTIONAL_TYPES.items():
                if field in schema.names and not _arrow_type_fits(schema.field(field).type, types):
                    raise BattlesInvalid(
                        name,
                        f"column {field} is of type {schema.field(field).type}",
                        f"write {field} as {' or '.join(t.__name__ for t in types)}, or drop the column",
                    )
            table = pq.read_table(path, columns=list(REQUIRED))
            styled = _parquet_style(path, [f for f in STYLE_FIELDS if f in schema.names]) if style else None
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(
                path,
                convert_options=pcsv.ConvertOptions(
                    include_columns=list(REQUIRED),
                    column_types={field: pa.string() for field in REQUIRED},
                    strings_can_be_null=False,
                ),
            )
            styled = None
            if style:  # JSON text in the cells; an absent column reads as nulls, refused below per row
                styled = pcsv.read_csv(
                    path,
                    convert_options=pcsv.ConvertOptions(
                        include_columns=list(STYLE_FIELDS),
                        include_missing_columns=True,
                        column_types={field: pa.string() for field in STYLE_FIELDS},
                        strings_can_be_null=True,
                    ),
                )
    except BattlesInvalid:
        raise
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as exc:
        raise BattlesInvalid(
            name, f"cannot be read as {suffix[1:].upper()} ({exc})", f"write a table of {FORMAT}"
        ) from exc
    if table.num_rows > MAX_BATTLES:
        raise BattlesInvalid(
            name,
            f"has {table.num_rows:,} battles, over {MAX_BATTLES:,}",
            "split the file, or keep the battles you rate",
        )
    found = []
    for field in REQUIRED:
        column = table.column(field)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise BattlesInvalid(
                name, f"column {field} is of type {column.type}, not strings", f"write {FORMAT}"
            )
        found.append(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)

    def where(i: int) -> str:
        return f"row {i} (counted from 0, after the header)" if suffix == ".csv" else f"row {i}"

    counts = styled if styled is None or isinstance(styled, np.ndarray) else _table_style(styled, name, where)
    if counts is not None and len(counts) != table.num_rows:  # a table of no style field has no rows
        style_counts({}, name, where(0))
    return _encode(found[0], found[1], found[2], name, where, counts)


def _parquet_style(path: Path, present: list[str]) -> pa.Table | np.ndarray:
    """The style counts of a Parquet file when its conv_metadata column reads as columns (then the
    conversations, gigabytes in the public releases, are not read); else the style fields, to check by row."""
    import pyarrow.parquet as pq

    if "conv_metadata" in present:
        counts = metadata_column_counts(pq.read_table(path, columns=["conv_metadata"]).column(0))
        if counts is not None:
            return counts
    return pq.read_table(path, columns=present)


def _table_style(table: pa.Table, name: str, where: Callable[[int], str]) -> np.ndarray:
    """Style counts of each row of a table of the style fields (nested, or JSON text), a batch at a time."""
    loads = _loads()
    counts = array("i")
    i = 0
    for batch in table.to_batches(max_chunksize=65_536):
        text = [
            f.name for f in batch.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        for record in batch.to_pylist():
            for field in text:
                if record[field] is not None:
                    try:
                        record[field] = loads(record[field])
                    except (ValueError, UnicodeDecodeError) as exc:
                        raise BattlesInvalid(
                            name, f"{where(i)}: {field} is not valid JSON ({exc})", f"write {field} as JSON"
                        ) from exc
            counts.extend(style_counts(record, name, where(i)))
            i += 1
    return _style_array(counts)


def _arrow_type_fits(arrow_type: pa.DataType, types: tuple[type, ...]) -> bool:
    if pa.types.is_null(arrow_type):
        return True
    if str in types:
        return bool(
            pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type)
            or pa.types.is_dictionary(arrow_type)
        )
    if bool in types:
        return bool(pa.types.is_boolean(arrow_type))
    if float in types:
        return bool(
            pa.types.is_integer(arrow_type)
            or pa.types.is_floating(arrow_type)
            or pa.types.is_timestamp(arrow_type)
        )
    return bool(pa.types.is_integer(arrow_type))


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _encode(
    a: pa.Array,
    b: pa.Array,
    winner: pa.Array,
    name: str,
    where: Callable[[int], str],
    style: np.ndarray | None = None,
) -> Battles:
    """Checks shared by every format, then the names sorted and the columns turned into indices."""
    for field, column in (("model_a", a), ("model_b", b), ("winner", winner)):
        if column.null_count:
            raise BattlesInvalid(
                name, f"{where(_first(column.is_null()))}: {field} is missing", f"give every record {FORMAT}"
            )
    for field, column in (("model_a", a), ("model_b", b)):
        lengths = pc.utf8_length(column)
        bad = pc.or_(pc.greater(lengths, MAX_NAME_CHARS), pc.equal(lengths, 0))
        if pc.any(bad).as_py():
            i = _first(bad)
            length = lengths[i].as_py()
            raise BattlesInvalid(
                name,
                f"{where(i)}: {field} is {'empty' if length == 0 else f'{length:,} characters long'}",
                f"give {field} a model name of 1 to {MAX_NAME_CHARS} characters",
            )
    allowed = pa.array(sorted(WINNERS), pa.string())
    bad = pc.invert(pc.is_in(winner.cast(pa.string()), value_set=allowed))
    if pc.any(bad).as_py():
        i = _first(bad)
        raise BattlesInvalid(name, f"{where(i)}: winner is {winner[i].as_py()!r}", WINNER_RULE)
    same = pc.equal(a, b)
    if pc.any(same).as_py():
        i = _first(same)
        raise BattlesInvalid(
            name,
            f"{where(i)}: {a[i].as_py()} battles itself",
            "leave out battles of a model against itself (they say nothing about its rating)",
        )
    if len(a) == 0:
        raise BattlesInvalid(name, "has no battles", f"give at least one battle: {FORMAT}")
    models = pc.unique(pa.concat_arrays([a.cast(pa.string()), b.cast(pa.string())])).sort()
    if len(models) > MAX_MODELS:
        raise BattlesInvalid(
            name, f"has {len(models):,} models, over {MAX_MODELS:,}", "rate the models in smaller groups"
        )
    codes = np.array([WINNERS[w] for w in sorted(WINNERS)], dtype=np.int8)
    return Battles(
        models=tuple(models.to_pylist()),
        model_a=pc.index_in(a.cast(pa.string()), value_set=models).to_numpy().astype(np.int32),
        model_b=pc.index_in(b.cast(pa.string()), value_set=models).to_numpy().astype(np.int32),
        outcome=codes[pc.index_in(winner.cast(pa.string()), value_set=allowed).to_numpy()],
        style=style,
    )
