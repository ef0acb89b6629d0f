"""Per-user rate limits of the API's writes: a sliding window per (user, action), in this server process.

Several API processes each keep their own windows (a user gets the limit once per process); the
per-namespace weekly submission limit is the database's and holds across processes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from backend.errors import RateLimited

MAX_KEYS = 10_000  # (user, action) pairs kept before the idle ones are forgotten


class RateLimiter:
    def __init__(self, limits: dict[str, tuple[int, float]], monotonic: Callable[[], float] = time.monotonic):
        """``limits``: action -> (most events, window in seconds)."""
        self.limits = limits
        self.monotonic = monotonic
        self._events: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, user: str, action: str) -> None:
        """Count one ``action`` by ``user``, or raise RateLimited (counting nothing) when over the limit."""
        most, window = self.limits[action]
        now = self.monotonic()
        with self._lock:
            if len(self._events) > MAX_KEYS:
                self._sweep(now)
            events = self._events.setdefault((user, action), deque())
            while events and events[0] <= now - window:
                events.popleft()
            if len(events) >= most:
                retry_after = max(events[0] + window - now, 1.0)
                raise RateLimited(
                    f"{user} made {most} {action} requests in the last {window:.0f} s, the most allowed: "
                    f"try again in {retry_after:.0f} s",
                    retry_after_s=retry_after,
                )
            events.append(now)

    def _sweep(self, now: float) -> None:
        """Forget the (user, action) pairs with no event left in their window, so many callers seen once
        (sign-in attempts from many addresses) do not grow the table without end."""
        for key, events in list(self._events.items()):
            if not events or events[-1] <= now - self.limits[key[1]][1]:
                del self._events[key]
