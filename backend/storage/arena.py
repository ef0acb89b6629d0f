"""Arena battles and their turns: every change one guarded statement, so a battle takes one vote, an answer
is stored once, and a turn is added once, whatever runs at the same time.

A battle's ``winner`` is its vote: ``UPDATE ... WHERE winner IS NULL AND revealed_at IS NULL`` and the latest
turn answered on both sides, in the same transaction as the guarded increment of the voter's count for the
day (``arena_voter_days``), so the daily cap holds under any number of concurrent votes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import Connection, String, and_, bindparam, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from backend.errors import BattleNotFound, BattleRefused, DailyVoteCap
from backend.storage.database import Database
from backend.storage.schema import arena_battles, arena_turns, arena_voter_days

SIDES = ("a", "b")


@dataclass(frozen=True)
class Turn:
    number: int
    prompt: str
    answer_a: str | None
    answer_b: str | None
    finish_a: str | None
    finish_b: str | None
    answered_a_at: datetime | None
    answered_b_at: datetime | None
    created_at: datetime

    def answer(self, side: str) -> str | None:
        return self.answer_a if side == "a" else self.answer_b

    @property
    def answered(self) -> bool:
        return self.answer_a is not None and self.answer_b is not None


@dataclass(frozen=True)
class Battle:
    id: int
    arena: str
    mode: str  # live, static or imported
    model_a: str
    model_b: str
    user: str | None
    question: str | None
    created_at: datetime
    winner: str | None
    voted_at: datetime | None
    revealed_at: datetime | None
    anony: bool
    turns: tuple[Turn, ...]

    def model(self, side: str) -> str:
        return self.model_a if side == "a" else self.model_b

    @property
    def latest(self) -> Turn:
        return self.turns[-1]


@dataclass(frozen=True)
class NewBattle:
    arena: str
    mode: str
    model_a: str
    model_b: str
    user: str | None
    address: str | None
    question: str | None
    prompt: str
    answers: tuple[str, str] | None = None  # static battles come answered
    finishes: tuple[str, str] | None = None


@dataclass(frozen=True)
class ImportedBattle:
    """A voted battle read from a battles file: no user, and the key of its record (unique), so a file
    imported twice adds nothing. ``turns``: (prompt, answer_a, answer_b), answers None when not given."""

    import_key: str
    model_a: str
    model_b: str
    winner: str
    anony: bool
    voted_at: datetime
    question: str | None
    turns: tuple[tuple[str, str | None, str | None], ...]


@dataclass(frozen=True)
class VoterVote:
    """One vote, for the abuse report."""

    user: str
    address: str | None
    winner: str
    voted_at: datetime
    answered_at: datetime | None  # when the voted turn's last answer was stored


class ArenaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Battles and turns.

    def create(self, new: NewBattle, now: datetime) -> int:
        answers = new.answers or (None, None)
        finishes = new.finishes or (None, None)
        answered = now if new.answers is not None else None
        with self.db.transaction() as conn:
            battle_id = conn.execute(
                insert(arena_battles)
                .values(
                    arena=new.arena, mode=new.mode, model_a=new.model_a, model_b=new.model_b, user=new.user,
                    address=new.address, question=new.question, turns=1, created_at=now, anony=True,
                )
                .returning(arena_battles.c.id)
            ).scalar_one()  # fmt: skip
            conn.execute(
                insert(arena_turns).values(
                    battle_id=battle_id, turn=1, prompt=new.prompt, answer_a=answers[0], answer_b=answers[1],
                    finish_a=finishes[0], finish_b=finishes[1], answered_a_at=answered,
                    answered_b_at=answered, created_at=now,
                )
            )  # fmt: skip
        return int(battle_id)

    def get(self, battle_id: int) -> Battle | None:
        with self.db.transaction() as conn:
            return _read(conn, battle_id)

    def claim_answer(
        self, battle_id: int, turn: int, side: str, now: datetime, stale_before: datetime
    ) -> bool:
        """Mark ``side``'s answer to ``turn`` as being generated; False when it is answered already or being
        generated since after ``stale_before`` (a claim older than that was lost with its process)."""
        started, answer = _side(side, "started"), _side(side, "answer")
        with self.db.transaction() as conn:
            claimed = conn.execute(
                update(arena_turns)
                .where(
                    arena_turns.c.battle_id == battle_id,
                    arena_turns.c.turn == turn,
                    answer.is_(None),
                    (started.is_(None)) | (started < stale_before),
                )
                .values({started.name: now})
            ).rowcount
        return claimed == 1

    def release_answer(self, battle_id: int, turn: int, side: str) -> None:
        """Give up a claim (the generation failed or its reader left): the answer can be asked for again."""
        started, answer = _side(side, "started"), _side(side, "answer")
        with self.db.transaction() as conn:
            conn.execute(
                update(arena_turns)
                .where(arena_turns.c.battle_id == battle_id, arena_turns.c.turn == turn, answer.is_(None))
                .values({started.name: None})
            )

    def store_answer(
        self, battle_id: int, turn: int, side: str, text: str, finish: str, now: datetime
    ) -> bool:
        """Store ``side``'s answer to ``turn`` once; False when one was stored already."""
        answer = _side(side, "answer")
        with self.db.transaction() as conn:
            stored = conn.execute(
                update(arena_turns)
                .where(arena_turns.c.battle_id == battle_id, arena_turns.c.turn == turn, answer.is_(None))
                .values({answer.name: text, f"finish_{side}": finish, f"answered_{side}_at": now})
            ).rowcount
        return stored == 1

    def add_turn(self, battle_id: int, user: str, turn: int, prompt: str, now: datetime) -> None:
        """Add turn ``turn + 1`` to a live battle of ``user`` whose turn ``turn`` is its latest and answered."""
        with self.db.transaction() as conn:
            added = conn.execute(
                update(arena_battles)
                .where(
                    arena_battles.c.id == battle_id,
                    arena_battles.c.user == user,
                    arena_battles.c.mode == "live",
                    arena_battles.c.turns == turn,
                    _latest_answered(),
                )
                .values(turns=turn + 1)
            ).rowcount
            if added != 1:
                self._refuse(conn, battle_id, user, "continue")
            conn.execute(
                insert(arena_turns).values(battle_id=battle_id, turn=turn + 1, prompt=prompt, created_at=now)
            )

    def vote(self, battle_id: int, user: str, winner: str, now: datetime, cap: int) -> Battle:
        """Record ``user``'s vote on their battle, revealing its names, within ``cap`` votes a UTC day.

        On PostgreSQL the guarded update and the guarded increment are one statement, built once: one round
        trip instead of two, and no statement built per call. In alternated runs of 200 concurrent voters on a
        loaded 2-CPU machine (bench/arena_votes.py) the vote's median fell from 11-25 ms to 7-15 ms and the
        client's CPU per vote from 2.9 to 2.0 ms. On SQLite, where a statement is a function call, two
        statements. Either way one transaction: a vote past the cap rolls the battle's update back. Returns
        the battle as voted (read in the same transaction: no second connection for the reply)."""
        params = {
            "vote_battle_id": battle_id, "vote_user": user, "vote_winner": winner, "vote_now": now,
            "vote_day": now.strftime("%Y-%m-%d"), "vote_cap": cap,
        }  # fmt: skip
        with self.db.transaction() as conn:
            if self.db.is_postgres:
                voted, counted = conn.execute(_VOTE_AND_COUNT, params).one()
            else:
                voted = conn.execute(_VOTE, params).rowcount
                counted = voted == 1 and conn.execute(_COUNT_ON_SQLITE, params).first() is not None
            if voted != 1:
                self._refuse(conn, battle_id, user, "vote")
            if not counted:
                raise DailyVoteCap(
                    f"{user} has cast {cap} arena votes today (UTC), the most allowed "
                    "(LEADERBOARD_ARENA_DAILY_VOTES): vote again tomorrow",
                    retry_after_s=_seconds_to_midnight(now),
                )
            battle = _read(conn, battle_id)  # the names to show, read in the vote's own transaction
        assert battle is not None  # the vote matched it
        return battle

    def reveal(self, battle_id: int, user: str, now: datetime) -> None:
        """Show the names without a vote: the battle can no longer be voted on."""
        with self.db.transaction() as conn:
            revealed = conn.execute(
                update(arena_battles)
                .where(
                    arena_battles.c.id == battle_id,
                    arena_battles.c.user == user,
                    arena_battles.c.revealed_at.is_(None),
                )
                .values(revealed_at=now)
            ).rowcount
            if revealed != 1:
                self._refuse(conn, battle_id, user, "reveal")

    def _refuse(self, conn: Connection, battle_id: int, user: str, action: str) -> NoReturn:
        """Why a guarded update of ``action`` matched nothing, as the error to raise."""
        row = conn.execute(
            select(
                arena_battles.c.user,
                arena_battles.c.mode,
                arena_battles.c.winner,
                arena_battles.c.revealed_at,
            )
            .add_columns(_latest_answered().label("answered"))
            .where(arena_battles.c.id == battle_id)
        ).first()
        if row is None or row.user != user:
            raise BattleNotFound(f"no battle {battle_id} of {user}: start one on the arena page")
        if action == "continue" and row.mode != "live":
            raise BattleRefused(
                "static-battle",
                f"battle {battle_id} shows two stored answers",
                "vote on it, or start a battle",
            )
        if action == "vote" and row.winner is not None:
            raise BattleRefused("one-vote", f"battle {battle_id} has its vote already", "start a new battle")
        if action in ("vote", "reveal") and row.revealed_at is not None:
            raise BattleRefused(
                "hidden-names",
                f"the names of battle {battle_id} are shown already, and only votes cast while both are hidden "
                "count",
                "start a new battle to vote",
            )
        if not row.answered:
            raise BattleRefused(
                "answers-first",
                f"the latest turn of battle {battle_id} is not answered on both sides yet",
                "read both answers (ask for the missing one again if it failed), then vote or continue",
            )
        raise BattleRefused(
            "one-turn-at-a-time", f"battle {battle_id} changed meanwhile", "reload it and try again"
        )

    # Reading votes.

    def vote_columns(self, arena: str) -> tuple[list[str], list[str], list[str]]:
        """model_a, model_b and winner of every vote of ``arena`` cast with both names hidden."""
        query = (
            select(arena_battles.c.model_a, arena_battles.c.model_b, arena_battles.c.winner)
            .where(arena_battles.c.arena == arena, arena_battles.c.winner.is_not(None), arena_battles.c.anony)
            .order_by(arena_battles.c.id)
        )
        with self.db.transaction() as conn:
            rows = conn.execute(query).all()
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def vote_stamp(self, arena: str) -> tuple[int, int]:
        """(votes, newest battle id): changes whenever a vote is cast or a battle imported."""
        query = select(func.count(), func.coalesce(func.max(arena_battles.c.id), 0)).where(
            arena_battles.c.arena == arena, arena_battles.c.winner.is_not(None)
        )
        with self.db.transaction() as conn:
            count, newest = conn.execute(query).one()
        return int(count), int(newest)

    def voter_votes(self, arena: str, since: datetime) -> list[VoterVote]:
        """Every vote cast in the arena since ``since`` (imported ones have no voter), for the abuse report."""
        query = (
            select(
                arena_battles.c.user,
                arena_battles.c.address,
                arena_battles.c.winner,
                arena_battles.c.voted_at,
                arena_turns.c.answered_a_at,
                arena_turns.c.answered_b_at,
            )
            .join(
                arena_turns,
                and_(
                    arena_turns.c.battle_id == arena_battles.c.id, arena_turns.c.turn == arena_battles.c.turns
                ),
            )
            .where(
                arena_battles.c.arena == arena,
                arena_battles.c.winner.is_not(None),
                arena_battles.c.user.is_not(None),
                arena_battles.c.voted_at >= since,
            )
            .order_by(arena_battles.c.id)
        )
        with self.db.transaction() as conn:
            rows = conn.execute(query).all()
        return [
            VoterVote(
                user=r.user,
                address=r.address,
                winner=r.winner,
                voted_at=r.voted_at,
                answered_at=max(
                    (t for t in (r.answered_a_at, r.answered_b_at) if t is not None), default=None
                ),
            )
            for r in rows
        ]

    # Import and export (the public arena's battle records).

    def insert_imported(self, arena: str, battles: Sequence[ImportedBattle]) -> int:
        """Insert a batch of imported battles with their turns, in one transaction; a battle whose
        ``import_key`` is stored already is left as it is (``INSERT ... ON CONFLICT DO NOTHING``, so
        concurrent imports of one file add each battle once). Returns how many were new."""
        if not battles:
            return 0
        dialect = postgresql if self.db.is_postgres else sqlite
        statement = (
            dialect.insert(arena_battles)
            .on_conflict_do_nothing(index_elements=[arena_battles.c.import_key])
            .returning(arena_battles.c.id, arena_battles.c.import_key)
        )
        rows = [
            dict(
                arena=arena, mode="imported", model_a=b.model_a, model_b=b.model_b, user=None, address=None,
                question=b.question, turns=len(b.turns), created_at=b.voted_at, winner=b.winner,
                voted_at=b.voted_at, revealed_at=b.voted_at, anony=b.anony, import_key=b.import_key,
            )
            for b in battles
        ]  # fmt: skip
        by_key = {b.import_key: b for b in battles}
        with self.db.transaction() as conn:
            added = conn.execute(statement, rows).all()
            turns = [
                dict(
                    battle_id=battle_id, turn=number, prompt=prompt, answer_a=answer_a, answer_b=answer_b,
                    answered_a_at=None if answer_a is None else by_key[key].voted_at,
                    answered_b_at=None if answer_b is None else by_key[key].voted_at,
                    created_at=by_key[key].voted_at,
                )
                for battle_id, key in added
                for number, (prompt, answer_a, answer_b) in enumerate(by_key[key].turns, start=1)
            ]  # fmt: skip
            if turns:
                conn.execute(insert(arena_turns), turns)
        return len(added)

    def voted_battles(self, arena: str, batch: int = 1000) -> Iterator[Battle]:
        """Every voted battle of ``arena`` with its turns, in id order, read ``batch`` at a time."""
        after = 0
        while True:
            with self.db.transaction() as conn:
                rows = (
                    conn.execute(
                        select(arena_battles)
                        .where(
                            arena_battles.c.arena == arena,
                            arena_battles.c.winner.is_not(None),
                            arena_battles.c.id > after,
                        )
                        .order_by(arena_battles.c.id)
                        .limit(batch)
                    )
                    .mappings()
                    .all()
                )
                if not rows:
                    return
                ids = [r["id"] for r in rows]
                turns: dict[int, list[Turn]] = {i: [] for i in ids}
                for t in conn.execute(
                    select(arena_turns)
                    .where(arena_turns.c.battle_id.in_(ids))
                    .order_by(arena_turns.c.battle_id, arena_turns.c.turn)
                ).mappings():
                    turns[t["battle_id"]].append(_turn(t))
            yield from (_battle(r, turns[r["id"]]) for r in rows)
            after = ids[-1]


def _side(side: str, what: str) -> Any:
    if side not in SIDES:
        raise ValueError(f"side must be a or b, not {side!r}")
    return arena_turns.c[f"{what}_{side}_at" if what == "started" else f"{what}_{side}"]


def _latest_answered() -> Any:
    """The battle's latest turn has both answers (a correlated EXISTS: read when the statement runs)."""
    return exists().where(
        arena_turns.c.battle_id == arena_battles.c.id,
        arena_turns.c.turn == arena_battles.c.turns,
        arena_turns.c.answer_a.is_not(None),
        arena_turns.c.answer_b.is_not(None),
    )


#: The vote: the battle's winner set once, by its owner, while both names are hidden and both answered.
_VOTE = (
    update(arena_battles)
    .where(
        arena_battles.c.id == bindparam("vote_battle_id"),
        arena_battles.c.user == bindparam("vote_user"),
        arena_battles.c.winner.is_(None),
        arena_battles.c.revealed_at.is_(None),
        _latest_answered(),
    )
    .values(
        winner=bindparam("vote_winner"),
        voted_at=bindparam("vote_now"),
        revealed_at=bindparam("vote_now"),
        anony=True,
    )
)


def _counted(statement: Any) -> Any:
    """The voter's count for the day, one more unless it is at the cap already (RETURNING no row then)."""
    return statement.on_conflict_do_update(
        index_elements=[arena_voter_days.c.voter, arena_voter_days.c.day],
        set_={"votes": arena_voter_days.c.votes + 1},
        where=arena_voter_days.c.votes < bindparam("vote_cap"),
    ).returning(arena_voter_days.c.votes)


def _vote_and_count() -> Any:
    """PostgreSQL: the vote and the voter's count for the day in one statement, (votes set, days counted).

    Both data-modifying CTEs run whether read or not; the count's INSERT selects from the vote's RETURNING,
    so it adds one only when the vote matched, and ON CONFLICT ... WHERE votes < cap locks and re-reads the
    latest row (READ COMMITTED), as two statements would: the cap holds under concurrent votes."""
    voted = _VOTE.returning(arena_battles.c.id).cte("voted")
    voter = select(bindparam("vote_user", type_=String), bindparam("vote_day", type_=String), literal(1))
    insert_count = postgresql.insert(arena_voter_days).from_select(
        ["voter", "day", "votes"], voter.select_from(voted)
    )
    counted = _counted(insert_count).cte("counted")
    return select(
        select(func.count()).select_from(voted).scalar_subquery(),
        select(func.count()).select_from(counted).scalar_subquery(),
    )


_VOTE_AND_COUNT = _vote_and_count()
_COUNT_ON_SQLITE = _counted(
    sqlite.insert(arena_voter_days).values(voter=bindparam("vote_user"), day=bindparam("vote_day"), votes=1)
)


def _seconds_to_midnight(now: datetime) -> float:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return max(86400.0 - (now - midnight).total_seconds(), 1.0)


#: A battle with its turns, in one query (a battle always has its first turn): one round trip.
_BATTLE_AND_TURNS = (
    select(arena_battles, *(c.label(f"turn_{c.name}") for c in arena_turns.c if c.name != "battle_id"))
    .join(arena_turns, arena_turns.c.battle_id == arena_battles.c.id)
    .where(arena_battles.c.id == bindparam("battle_id"))
    .order_by(arena_turns.c.turn)
)


def _read(conn: Connection, battle_id: int) -> Battle | None:
    rows = conn.execute(_BATTLE_AND_TURNS, {"battle_id": battle_id}).mappings().all()
    return _battle(rows[0], [_turn(row, "turn_") for row in rows]) if rows else None


def _turn(row: Any, prefix: str = "") -> Turn:
    """A turn from a row of arena_turns, its columns named ``prefix`` + their names."""
    return Turn(
        number=row[f"{prefix}turn"],
        prompt=row[f"{prefix}prompt"],
        answer_a=row[f"{prefix}answer_a"],
        answer_b=row[f"{prefix}answer_b"],
        finish_a=row[f"{prefix}finish_a"],
        finish_b=row[f"{prefix}finish_b"],
        answered_a_at=row[f"{prefix}answered_a_at"],
        answered_b_at=row[f"{prefix}answered_b_at"],
        created_at=row[f"{prefix}created_at"],
    )


def _battle(row: Any, turns: list[Turn]) -> Battle:
    return Battle(
        id=row["id"],
        arena=row["arena"],
        mode=row["mode"],
        model_a=row["model_a"],
        model_b=row["model_b"],
        user=row["user"],
        question=row["question"],
        created_at=row["created_at"],
        winner=row["winner"],
        voted_at=row["voted_at"],
        revealed_at=row["revealed_at"],
        anony=row["anony"],
        turns=tuple(turns),
    )
