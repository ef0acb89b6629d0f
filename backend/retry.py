"""Exponential backoff, as data: how many attempts, and how long to wait between two of them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``attempts`` in all; the wait before the second is ``base_s``, doubling with each attempt up to
    ``max_s``."""

    attempts: int
    base_s: float
    max_s: float

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.base_s * 2 ** (attempt - 1), self.max_s)
