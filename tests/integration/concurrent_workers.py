"""Code that runs in the child processes of the concurrency tests (imported by name under spawn)."""

from __future__ import annotations

from typing import Any

from backend.app import App
from backend.errors import AlreadyVoted
from backend.settings import Settings


def claim_until_empty(database_url: str, worker_id: str, barrier: Any) -> list[int]:
    app = App.open(Settings(database_url=database_url))
    barrier.wait()
    claimed = []
    while (request := app.queue.claim(worker_id)) is not None:
        claimed.append(request.id)
    app.close()
    return claimed


def cast_votes(database_url: str, ballots: list[tuple[int, str]], barrier: Any) -> tuple[int, list[str]]:
    """Cast each (request, user) ballot; returns (accepted, messages of the rejected ones)."""
    app = App.open(Settings(database_url=database_url))
    barrier.wait()
    accepted, rejected = 0, []
    for request_id, user in ballots:
        try:
            app.votes.vote(request_id, user)
            accepted += 1
        except AlreadyVoted as exc:
            rejected.append(exc.message)
    app.close()
    return accepted, rejected
