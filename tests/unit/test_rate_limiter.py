"""The API's per-user sliding-window rate limits, on a clock the test moves."""

from __future__ import annotations

import pytest

from backend.api.limits import RateLimiter
from backend.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_slides_and_users_and_actions_are_counted_apart() -> None:
    clock = Clock()
    limiter = RateLimiter({"vote": (3, 60.0), "submission": (1, 3600.0)}, monotonic=clock)
    for _ in range(3):
        limiter.hit("alice", "vote")
    with pytest.raises(RateLimited, match="alice made 3 vote requests") as refused:
        limiter.hit("alice", "vote")
    assert refused.value.retry_after_s == pytest.approx(60.0)
    limiter.hit("bob", "vote")  # another user
    limiter.hit("alice", "submission")  # another action
    clock.now += 30
    with pytest.raises(RateLimited) as still:
        limiter.hit("alice", "vote")
    assert still.value.retry_after_s == pytest.approx(30.0)  # a refused attempt is not counted
    clock.now += 30  # the first three fall out of the window
    for _ in range(3):
        limiter.hit("alice", "vote")
    with pytest.raises(RateLimited):
        limiter.hit("alice", "submission")


def test_callers_seen_once_are_forgotten_once_their_window_has_passed() -> None:
    from backend.api import limits

    clock = Clock()
    limiter = RateLimiter({"signin": (2, 60.0), "submission": (1, 3600.0)}, monotonic=clock)
    limiter.hit("steady", "submission")
    for i in range(limits.MAX_KEYS + 1):
        limiter.hit(f"10.0.{i // 256}.{i % 256}", "signin")
    clock.now += 61  # every sign-in window has passed; the submission's has not
    limiter.hit("newcomer", "signin")
    assert set(limiter._events) == {("steady", "submission"), ("newcomer", "signin")}
    with pytest.raises(RateLimited):
        limiter.hit("steady", "submission")  # what is still in its window is kept
