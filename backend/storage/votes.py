"""Votes: one per (request, voter), enforced by the database, with the request's count kept exact in the
same transaction (the queue orders by that count through an index)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import NoReturn

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from backend.domain import Status, Vote
from backend.errors import AlreadyVoted, NotVoted, RequestNotFound, VotingClosed
from backend.storage.database import Database
from backend.storage.schema import requests, votes


class VoteRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, request_id: int, voter: str, now: datetime) -> int:
        """Cast a vote; returns the request's new vote count."""
        try:
            with self.db.transaction() as conn:
                # Count first: the guarded update locks the request row, so concurrent votes queue here.
                count = conn.execute(
                    update(requests)
                    .where(requests.c.id == request_id, requests.c.status == Status.PENDING.value)
                    .values(votes=requests.c.votes + 1)
                    .returning(requests.c.votes)
                ).scalar()
                if count is None:
                    self._raise_not_votable(conn, request_id)
                conn.execute(insert(votes).values(request_id=request_id, voter=voter, created_at=now))
        except IntegrityError as exc:
            if "uq_votes_request_voter" in str(exc.orig) or "votes.request_id, votes.voter" in str(exc.orig):
                raise AlreadyVoted(
                    f"{voter} has already voted for request {request_id}: each user has one vote per request"
                ) from exc
            raise
        return int(count or 0)

    def remove(self, request_id: int, voter: str) -> int:
        """Withdraw a vote; returns the request's new vote count."""
        with self.db.transaction() as conn:
            count = conn.execute(
                update(requests)
                .where(requests.c.id == request_id, requests.c.status == Status.PENDING.value)
                .values(votes=requests.c.votes - 1)
                .returning(requests.c.votes)
            ).scalar()
            if count is None:
                self._raise_not_votable(conn, request_id)
            deleted = conn.execute(
                delete(votes).where(votes.c.request_id == request_id, votes.c.voter == voter)
            )
            if deleted.rowcount != 1:
                raise NotVoted(f"{voter} has no vote on request {request_id} to withdraw")
        return int(count or 0)

    @staticmethod
    def _raise_not_votable(conn: Connection, request_id: int) -> NoReturn:
        status = conn.execute(select(requests.c.status).where(requests.c.id == request_id)).scalar()
        if status is None:
            raise RequestNotFound(f"no request {request_id}: list requests with `leaderboard queue`")
        raise VotingClosed(
            f"request {request_id} is {status}: votes are only taken while a request is PENDING"
        )

    def all_votes(self, request_id: int | None = None) -> list[Vote]:
        query = select(votes).order_by(votes.c.id)
        if request_id is not None:
            query = query.where(votes.c.request_id == request_id)
        with self.db.transaction() as conn:
            rows = conn.execute(query).mappings().all()
        return [Vote(request_id=r["request_id"], user=r["voter"], at=r["created_at"]) for r in rows]

    def voted(self, voter: str, request_ids: Collection[int]) -> set[int]:
        """Which of ``request_ids`` ``voter`` has a vote on, in one query (a page's worth of ids)."""
        if not request_ids:
            return set()
        query = select(votes.c.request_id).where(votes.c.voter == voter, votes.c.request_id.in_(request_ids))
        with self.db.transaction() as conn:
            return set(conn.execute(query).scalars())

    def insert_imported(self, request_id: int, voter: str, at: datetime) -> bool:
        """Insert a vote from a mirror whatever the request's status; False when it is already there."""
        try:
            with self.db.transaction() as conn:
                conn.execute(insert(votes).values(request_id=request_id, voter=voter, created_at=at))
                conn.execute(
                    update(requests).where(requests.c.id == request_id).values(votes=requests.c.votes + 1)
                )
        except IntegrityError:
            return False
        return True
