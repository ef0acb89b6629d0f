"""API tokens, monitoring figures and values a database cannot hold, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backend.app import App
from backend.domain import Status
from backend.errors import InvalidInput, TokenNotFound
from backend.storage.schema import api_tokens
from backend.storage.stats import StatsRepository
from backend.storage.tokens import TokenRepository, token_hash

from .conftest import Clock, new_request


def test_tokens_are_stored_hashed_found_and_revoked(app: App, clock: Clock) -> None:
    tokens = TokenRepository(app.db)
    record, secret = tokens.create("alice", False, "root", clock())
    admin, admin_secret = tokens.create("root", True, "root", clock())
    assert admin.is_admin
    assert secret != admin_secret and record.prefix == secret[:10] and not record.is_admin
    with app.db.transaction() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash)).scalars().all()
    assert sorted(stored) == sorted([token_hash(secret), token_hash(admin_secret)])
    assert secret not in str(stored)
    found = tokens.find(secret)
    assert found is not None and (found.user, found.is_admin) == ("alice", False)
    assert tokens.find(secret + "x") is None
    clock.advance(5)
    revoked = tokens.revoke(record.id, clock())
    assert revoked.revoked_at == clock()
    assert tokens.find(secret) is None and tokens.find(admin_secret) is not None
    assert tokens.revoke(record.id, clock()).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(TokenNotFound):
        tokens.revoke(999, clock())
    assert [t.user for t in tokens.all()] == ["alice", "root"]


def test_stats_count_requests_by_status(app: App, clock: Clock) -> None:
    for i in range(3):
        app.requests.create(new_request(model=f"org/m{i}"), clock(), None)
    app.queue.claim("w")
    counts = StatsRepository(app.db).requests_by_status()
    assert counts[Status.PENDING] == 2 and counts[Status.RUNNING] == 1 and counts[Status.FAILED] == 0
    buckets, count, total = StatsRepository(app.db).evaluation_durations()
    assert (count, total) == (0, 0.0) and all(n == 0 for _, n in buckets)


def test_a_value_the_database_cannot_hold_is_invalid_input(app: App) -> None:
    """PostgreSQL refuses NUL characters in text; that is the caller's input, never a server error."""
    if app.db.is_postgres:
        with pytest.raises(InvalidInput, match="a value cannot be stored"):
            app.admin.block("org/*", "root", "a\x00b")
    else:  # SQLite stores it as given
        app.admin.block("org/*", "root", "a\x00b")
        assert app.admin.listing("blocklist")[0].reason == "a\x00b"


class DictIdentity:
    """An identity provider over a dict of token -> user, counting the questions it is asked."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users, self.asked = users, 0

    def whoami(self, token: str) -> str:
        from backend.errors import Unauthorized

        self.asked += 1
        if token not in self.users:
            raise Unauthorized("the Hub does not recognise this Hugging Face token")
        return self.users[token]


def test_the_authenticator_maps_tokens_to_roles_and_caches_hub_answers(app: App, clock: Clock) -> None:
    from backend.errors import Forbidden, Unauthorized
    from backend.services.auth import Authenticator

    now = [0.0]
    hub = DictIdentity({"hf_a": "alice", "hf_r": "hubroot"})
    auth = Authenticator(TokenRepository(app.db), hub, frozenset({"hubroot"}), 60.0, clock, lambda: now[0])
    _, secret = auth.create_token("carol", True, "root")
    carol = auth.authenticate(f"  {secret} ")
    assert (carol.user, carol.is_admin, carol.via) == ("carol", True, "api-token")
    alice = auth.authenticate("hf_a")
    assert (alice.user, alice.is_admin, alice.via) == ("alice", False, "hub")
    with pytest.raises(Forbidden):
        alice.require_admin()
    assert auth.authenticate("hf_r").require_admin().user == "hubroot"
    assert hub.asked == 2
    now[0] = 59.0
    auth.authenticate("hf_a")
    assert hub.asked == 2  # cached
    now[0] = 61.0
    auth.authenticate("hf_a")
    assert hub.asked == 3  # expired: asked again
    for bad in ("", "lb_unknown", "hf_unknown", "two words", "x" * 600):
        with pytest.raises(Unauthorized):
            auth.authenticate(bad)
    closed = Authenticator(TokenRepository(app.db), None, frozenset(), 60.0, clock)
    with pytest.raises(Unauthorized, match="ask an admin for an API token"):
        closed.authenticate("hf_a")
    assert closed.authenticate(secret).user == "carol"
    with pytest.raises(InvalidInput, match="user must be"):
        auth.create_token("bad name", False, "root")
