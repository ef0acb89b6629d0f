"""The arena: a signed-in user's prompt answered by two anonymous models side by side, a vote, the names
revealed; ratings from every vote cast while both names were hidden.

What the client is told is decided here, never by the client: which models battle and on which side (drawn
by backend.arena.pairing), the names (only once the battle is voted on or revealed), whether a vote counts
(one per battle, by its owner, with the latest turn answered on both sides, names hidden, within the daily
cap). Answers stream from the models' endpoints (backend.arena.endpoints) and are stored once, whole; a
generation that fails or whose reader leaves is released, so it can be asked for again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import numpy as np

from backend.arena.battles import battles_of_columns
from backend.arena.config import ArenaConfig, ArenaGeneration, ArenaModel
from backend.arena.endpoints import Piece
from backend.arena.pairing import PairingWeights, choose_pair
from backend.arena.ratings import Ratings, fit_ratings
from backend.errors import (
    ArenaNotConfigured,
    BattleNotFound,
    BattleRefused,
    ChatEndpointRefused,
    ChatEndpointUnavailable,
    InvalidInput,
    NoBattlePossible,
)
from backend.services.arena_static import StaticAnswers
from backend.serving.client import ChatMessage
from backend.storage.arena import SIDES, ArenaRepository, Battle, NewBattle
from backend.storage.schema import ARENA_WINNERS

log = logging.getLogger(__name__)

MODES = ("live", "static")
DEFAULT_PAIRING = PairingWeights()
#: A claim on an answer older than this was lost with its process (a generation is bounded by max_tokens).
ANSWER_CLAIM_SECONDS = 600.0


class AnswerStreamer(Protocol):
    """Streams a model's answer from its endpoint (backend.arena.endpoints)."""

    def stream(
        self, model: ArenaModel, messages: Sequence[ChatMessage], generation: ArenaGeneration
    ) -> AsyncIterator[Piece]: ...

    async def aclose(self) -> None:
        """Close the connections (and an in-process endpoint), in the event loop that used them."""


@dataclass(frozen=True)
class AnswerEvent:
    """What the client reads of an answer: text as it comes, then ``done`` with the finish reason, or an
    ``error`` that says what to do (never which model it was)."""

    delta: str = ""
    done: bool = False
    finish: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TurnView:
    number: int
    prompt: str
    answer_a: str | None
    answer_b: str | None


@dataclass(frozen=True)
class BattleView:
    """A battle as its owner sees it: the names only once revealed."""

    id: int
    mode: str
    turns: tuple[TurnView, ...]
    model_a: str | None
    model_b: str | None
    winner: str | None
    revealed: bool
    can_vote: bool
    can_continue: bool

    @classmethod
    def of(cls, battle: Battle, max_turns: int) -> BattleView:
        revealed = battle.revealed_at is not None
        answered = battle.latest.answered
        return cls(
            id=battle.id,
            mode=battle.mode,
            turns=tuple(TurnView(t.number, t.prompt, t.answer_a, t.answer_b) for t in battle.turns),
            model_a=battle.model_a if revealed else None,
            model_b=battle.model_b if revealed else None,
            winner=battle.winner,
            revealed=revealed,
            can_vote=answered and not revealed and battle.winner is None,
            can_continue=answered and battle.mode == "live" and len(battle.turns) < max_turns,
        )


@dataclass(frozen=True)
class ArenaLimits:
    daily_votes: int = 200
    max_turns: int = 8
    max_prompt_chars: int = 8000
    ratings_seconds: float = 30.0


@dataclass
class _Fit:
    stamp: tuple[int, int]
    at: float
    ratings: Ratings | None


class ArenaService:
    def __init__(
        self,
        config: ArenaConfig,
        repository: ArenaRepository,
        clock: Callable[[], datetime],
        *,
        streamer: AnswerStreamer | None,
        static: StaticAnswers | None = None,
        limits: ArenaLimits = ArenaLimits(),
        pairing: PairingWeights = DEFAULT_PAIRING,
        address_key: bytes = b"",
        rng: np.random.Generator | None = None,
    ) -> None:
        self.config = config
        self.repository = repository
        self.clock = clock
        self.streamer = streamer
        self.static = static
        self.limits = limits
        self.pairing = pairing
        self.address_key = address_key
        self.rng = rng or np.random.default_rng()
        self._rng_lock = threading.Lock()
        self._fits: dict[int, _Fit] = {}  # by bootstrap rounds: 0 for pairing, the config's for the table
        self._fit_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    def modes(self) -> list[str]:
        """The kinds of battle this arena offers now."""
        modes = ["live"] if len(self.config.models) >= 2 and self.streamer is not None else []
        if self.static is not None and len(self.static.pool().models) >= 2:
            modes.append("static")
        return modes

    # Battles.

    def start(self, user: str, address: str | None, prompt: str | None, mode: str = "live") -> BattleView:
        """A new battle of ``user``: live (two roster models will answer ``prompt``) or static (two stored
        answers to an instruction of the judged leaderboard, which is then the prompt)."""
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        ratings, battles = self._pairing_inputs()
        if mode == "live":
            text = self._prompt(prompt)
            names = [m.name for m in self.config.models]
            if len(names) < 2 or self.streamer is None:
                raise NoBattlePossible(
                    f"the arena {self.name} has {len(names)} model(s) to battle live: add models to its config "
                    "(models:), or start a static battle"
                )
            model_a, model_b = self._choose(names, battles, ratings)
            new = NewBattle(self.name, "live", model_a, model_b, user, self._address(address), None, text)
        else:
            if prompt:
                raise InvalidInput(
                    "a static battle shows a stored instruction: send no prompt with mode static"
                )
            new = self._static_battle(user, address, battles, ratings)
        battle_id = self.repository.create(new, self.clock())
        log.info("arena battle started", extra={"battle": battle_id, "mode": mode, "user": user})
        return self.battle(battle_id, user)

    def _static_battle(
        self, user: str, address: str | None, battles: dict[str, int], ratings: dict[str, float]
    ) -> NewBattle:
        pool = self.static.pool() if self.static is not None else None
        if pool is None or len(pool.models) < 2:
            raise NoBattlePossible(
                f"the arena {self.name} has no stored answers of two models: static battles come from "
                f"{self.config.static_from or 'a judged leaderboard (static: judged: NAME)'} once two models "
                "are evaluated there"
            )
        for _ in range(20):  # a pair with no question in common is rare (judged runs share instructions)
            model_a, model_b = self._choose(pool.models, battles, ratings)
            shared = pool.shared(model_a, model_b)
            if shared:
                with self._rng_lock:
                    question = shared[int(self.rng.integers(len(shared)))]
                answers = (question.answers[model_a], question.answers[model_b])
                return NewBattle(
                    self.name, "static", model_a, model_b, user, self._address(address), question.key,
                    question.instruction, answers, ("stop", "stop"),
                )  # fmt: skip
        raise NoBattlePossible("no two models of the static pool answered the same instruction")

    def continue_battle(self, battle_id: int, user: str, prompt: str | None) -> BattleView:
        """Ask both models of a live battle one more question (after both answered the last one)."""
        text = self._prompt(prompt)
        battle = self._own(battle_id, user)
        if len(battle.turns) >= self.limits.max_turns:
            raise BattleRefused(
                "max-turns",
                f"battle {battle_id} has {len(battle.turns)} turns, the most one battle may have",
                "vote, then start a new battle",
            )
        self.repository.add_turn(battle_id, user, len(battle.turns), text, self.clock())
        return self.battle(battle_id, user)

    def battle(self, battle_id: int, user: str) -> BattleView:
        return BattleView.of(self._own(battle_id, user), self.limits.max_turns)

    def vote(self, battle_id: int, user: str, winner: str) -> BattleView:
        """``user``'s vote on their battle (model_a, model_b, tie or tie (bothbad)); the names come back."""
        if winner not in ARENA_WINNERS:
            raise InvalidInput(f"winner must be one of {', '.join(ARENA_WINNERS)}, not {winner!r}")
        battle = self.repository.vote(battle_id, user, winner, self.clock(), self.limits.daily_votes)
        log.info("arena vote", extra={"battle": battle_id, "user": user, "winner": winner})
        return BattleView.of(battle, self.limits.max_turns)

    def reveal(self, battle_id: int, user: str) -> BattleView:
        """The names without a vote; the battle then takes no vote (only votes cast while hidden count)."""
        self.repository.reveal(battle_id, user, self.clock())
        return self.battle(battle_id, user)

    async def answer(self, battle_id: int, user: str, side: str) -> AsyncGenerator[AnswerEvent, None]:
        """``side``'s answer to the latest turn, streamed: the stored one when there is one, else generated
        now, stored once whole, and released (to be asked for again) when it fails or the reader leaves."""
        if side not in SIDES:
            raise InvalidInput(f"side must be a or b, not {side!r}")
        battle = await anyio.to_thread.run_sync(self._own, battle_id, user)
        turn = battle.latest
        stored = turn.answer(side)
        if stored is not None:
            yield AnswerEvent(delta=stored)
            yield AnswerEvent(done=True, finish=turn.finish_a if side == "a" else turn.finish_b)
            return
        model = self.config.model(battle.model(side))
        if model is None or self.streamer is None:
            yield AnswerEvent(error="this model has left the arena: start a new battle")
            return
        now = self.clock()
        stale = now - timedelta(seconds=ANSWER_CLAIM_SECONDS)
        claimed = await anyio.to_thread.run_sync(
            self.repository.claim_answer, battle_id, turn.number, side, now, stale
        )
        if not claimed:
            yield AnswerEvent(error="this answer is being written for another request: reload the battle")
            return
        parts: list[str] = []
        finish = "stop"
        stored_whole = False
        try:
            async for piece in self.streamer.stream(
                model, _messages(battle, side, self.config), self.config.generation
            ):
                if piece.text:
                    parts.append(piece.text)
                    yield AnswerEvent(delta=piece.text)
                if piece.finish:
                    finish = piece.finish
            stored_whole = await anyio.to_thread.run_sync(
                self.repository.store_answer,
                battle_id,
                turn.number,
                side,
                "".join(parts),
                finish,
                self.clock(),
            )
        except (ChatEndpointUnavailable, ChatEndpointRefused) as exc:
            log.warning(
                "arena answer failed",
                extra={"battle": battle_id, "side": side, "model": model.name, "error": exc.message},
            )
            yield AnswerEvent(error=f"the model on side {side.upper()} could not answer now: ask again")
        finally:
            if not stored_whole:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(
                        self.repository.release_answer, battle_id, turn.number, side
                    )
        if stored_whole:
            yield AnswerEvent(done=True, finish=finish)

    # Ratings.

    def ratings(self) -> Ratings | None:
        """The table: Bradley-Terry ratings of every vote cast with both names hidden, with the config's
        bootstrap intervals (refitted at most every LEADERBOARD_ARENA_RATINGS_SECONDS); None before a vote."""
        return self._fit(self.config.ratings.bootstrap)

    def _fit(self, rounds: int) -> Ratings | None:
        stamp = self.repository.vote_stamp(self.name)
        held = self._fits.get(rounds)
        # A fit is kept while the votes are the same, or for ratings_seconds; "no votes yet" not past a vote.
        fresh = held is not None and (
            held.stamp == stamp
            or (held.ratings is not None and time.monotonic() - held.at < self.limits.ratings_seconds)
        )
        if held is not None and fresh:
            return held.ratings
        with self._fit_lock:
            held = self._fits.get(rounds)
            if held is None or held.stamp != stamp:
                held = _Fit(stamp, time.monotonic(), self._rate(rounds))
                self._fits[rounds] = held
        return held.ratings

    def _rate(self, rounds: int) -> Ratings | None:
        columns = self.repository.vote_columns(self.name)
        if not columns[0]:
            return None
        battles = battles_of_columns(*columns, source=f"the votes of {self.name}")
        anchor = self.config.ratings.anchor
        if anchor is not None and anchor[0] not in battles.models:
            anchor = None  # not rated yet: the mean is 1000 until it is
        return fit_ratings(battles, bootstrap=rounds, seed=self.config.ratings.seed, anchor=anchor, workers=1)

    def _pairing_inputs(self) -> tuple[dict[str, float], dict[str, int]]:
        fit = self._fit(0)
        if fit is None:
            return {}, {}
        return {m.model: m.rating for m in fit.models}, {m.model: m.battles for m in fit.models}

    # Helpers.

    def _choose(
        self, names: Sequence[str], battles: dict[str, int], ratings: dict[str, float]
    ) -> tuple[str, str]:
        with self._rng_lock:
            return choose_pair(self.rng, names, battles, ratings, self.pairing)

    def _own(self, battle_id: int, user: str) -> Battle:
        battle = self.repository.get(battle_id)
        if battle is None or battle.user != user or battle.arena != self.name:
            raise BattleNotFound(f"no battle {battle_id} of {user}: start one on the arena page")
        return battle

    def _prompt(self, prompt: str | None) -> str:
        if prompt is None or not prompt.strip():
            raise InvalidInput("prompt: write a question or task for the two models")
        if len(prompt) > self.limits.max_prompt_chars:
            raise InvalidInput(
                f"prompt: {len(prompt):,} characters, over the {self.limits.max_prompt_chars:,} allowed "
                "(LEADERBOARD_ARENA_MAX_PROMPT_CHARS): shorten it"
            )
        if "\x00" in prompt:
            raise InvalidInput("prompt: contains a NUL character; remove it")
        return prompt

    def _address(self, address: str | None) -> str | None:
        """A keyed hash of the client's address: the abuse report groups voters by it; the address itself
        is not kept."""
        if address is None:
            return None
        return hmac.new(self.address_key, address.encode(), hashlib.sha256).hexdigest()[:32]


def _messages(battle: Battle, side: str, config: ArenaConfig) -> list[ChatMessage]:
    """The conversation ``side``'s model sees: its own earlier answers, never the other's."""
    messages = []
    if config.generation.system_prompt:
        messages.append(ChatMessage("system", config.generation.system_prompt))
    for turn in battle.turns:
        messages.append(ChatMessage("user", turn.prompt))
        answer = turn.answer(side)
        if answer is not None and turn is not battle.latest:
            messages.append(ChatMessage("assistant", answer))
    return messages


def require(arena: ArenaService | None) -> ArenaService:
    if arena is None:
        raise ArenaNotConfigured()
    return arena
