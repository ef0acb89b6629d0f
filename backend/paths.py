"""Every path the project writes from data (a model id, a task name, a published file's name) is built
here: from parts that are plain names, and checked to stay inside its root once links are followed.

A model id is validated where it enters (submission, import); this is the last guard, for data that got
past an older version or a hand-edited database: a path that would leave its folder is never written.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from backend.errors import UnsafePath

MAX_PART_CHARS = 255  # a file name on every filesystem we run on


def check_part(part: object) -> str:
    """``part`` if it is one plain file name: a non-empty string, not '.' or '..', without a separator or
    a NUL, at most MAX_PART_CHARS characters."""
    if (
        not isinstance(part, str)
        or part in ("", ".", "..")
        or len(part) > MAX_PART_CHARS
        or any(c in part for c in "/\\\0")
    ):
        raise UnsafePath(f"{str(part)[:80]!r} is not a plain file name")
    return part


def parts_of(relative: str) -> tuple[str, ...]:
    """The parts of a relative POSIX path ('a/b/c.json'), each a plain file name."""
    if not isinstance(relative, str) or relative.startswith("/"):
        raise UnsafePath(f"{str(relative)[:80]!r} is not a relative path")
    return tuple(check_part(p) for p in PurePosixPath(relative).parts) or (check_part(""),)


def inside(root: Path, *parts: str) -> Path:
    """``root``/``parts``, refused (UnsafePath) when a part is not a plain name or when the path, with
    every link that exists followed, is not inside ``root``."""
    base = Path(root).resolve()
    path = base.joinpath(*(check_part(p) for p in parts))
    if not path.resolve().is_relative_to(base):
        raise UnsafePath(f"{'/'.join(parts)[:120]} leads out of its folder (through a link)")
    return path


def inside_relative(root: Path, relative: str) -> Path:
    """``inside(root, *parts_of(relative))``."""
    return inside(root, *parts_of(relative))
