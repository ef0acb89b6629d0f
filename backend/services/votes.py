"""Community votes: they decide which pending request runs next."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from backend.services.submissions import check_user
from backend.storage.votes import VoteRepository


class VoteService:
    def __init__(self, votes: VoteRepository, clock: Callable[[], datetime]) -> None:
        self.votes = votes
        self.clock = clock

    def vote(self, request_id: int, user: str) -> int:
        """Upvote a pending request; returns its vote count. AlreadyVoted on a second vote."""
        return self.votes.add(request_id, check_user(user), self.clock())

    def unvote(self, request_id: int, user: str) -> int:
        """Withdraw one's vote from a pending request; returns its vote count."""
        return self.votes.remove(request_id, check_user(user))
