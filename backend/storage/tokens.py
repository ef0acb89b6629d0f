"""API tokens: issued to a user (optionally an admin), stored as SHA-256 hashes, revocable.

The token itself is returned once, by `create`; only its hash and first characters are kept, so a database
dump does not leak usable tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, insert, select, update

from backend.errors import TokenNotFound
from backend.storage.database import Database
from backend.storage.schema import api_tokens

TOKEN_PREFIX = "lb_"
_SHOWN = 10  # characters of a token kept to tell tokens apart ("lb_" and 7 more)


@dataclass(frozen=True)
class ApiToken:
    id: int
    user: str
    prefix: str
    is_admin: bool
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _row(row: RowMapping) -> ApiToken:
    return ApiToken(**{name: row[name] for name in ApiToken.__dataclass_fields__})


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user: str, is_admin: bool, created_by: str, now: datetime) -> tuple[ApiToken, str]:
        """A new token for ``user``: the stored record and the token itself (shown once)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        values = {
            "user": user,
            "token_hash": token_hash(token),
            "prefix": token[:_SHOWN],
            "is_admin": is_admin,
            "created_by": created_by,
            "created_at": now,
        }
        with self.db.transaction() as conn:
            token_id = conn.execute(insert(api_tokens).values(values).returning(api_tokens.c.id)).scalar_one()
        return self.get(token_id), token

    def get(self, token_id: int) -> ApiToken:
        with self.db.transaction() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).mappings().first()
        if row is None:
            raise TokenNotFound(f"no API token {token_id}: list tokens with `leaderboard admin token list`")
        return _row(row)

    def find(self, token: str) -> ApiToken | None:
        """The live (not revoked) record of ``token``, or None."""
        return self.find_hash(token_hash(token))

    def find_hash(self, digest: str) -> ApiToken | None:
        """The live record of the token whose hash is ``digest``, or None."""
        query = select(api_tokens).where(api_tokens.c.token_hash == digest, api_tokens.c.revoked_at.is_(None))
        with self.db.transaction() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _row(row)

    def all(self) -> list[ApiToken]:
        with self.db.transaction() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).mappings().all()
        return [_row(r) for r in rows]

    def revoke(self, token_id: int, now: datetime) -> ApiToken:
        """Revoke a token (idempotent); TokenNotFound when there is no such token."""
        with self.db.transaction() as conn:
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return self.get(token_id)
