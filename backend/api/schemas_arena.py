"""What the arena's routes read and write (the API's and the arena page's): pydantic models, also the spec.

A battle is shown as its owner may see it (services.arena.BattleView): the two names only once it is voted
on or revealed. The answer stream's events are one of three small objects, so that a client reads
``delta`` until ``done`` or ``error``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, create_model

from backend.api.schemas import Strict
from backend.arena.ratings import ModelRating, Ratings
from backend.services.arena import MODES, ArenaService, BattleView
from backend.storage.arena import SIDES
from backend.storage.schema import ARENA_WINNERS

# The domain's choices, written once there (a Literal of a tuple: the spec lists them as an enum).
Mode = Literal[MODES]  # type: ignore[valid-type]
Side = Literal[SIDES]  # type: ignore[valid-type]
Winner = Literal[ARENA_WINNERS]  # type: ignore[valid-type]


class ArenaOut(BaseModel):
    name: str
    title: str
    modes: list[Mode] = Field(
        description="The kinds of battle offered now: live (two roster models answer your prompt) and static "
        "(two stored answers to an instruction of a judged leaderboard)."
    )
    models: int = Field(
        description="Models in the live roster. Which two battle, and on which side, is told only after the "
        "vote."
    )
    max_turns: int = Field(description="Turns (a prompt and two answers) one live battle may have.")
    max_prompt_chars: int = Field(description="Longest prompt accepted, in characters.")
    daily_votes: int = Field(description="Votes one user may cast per UTC day.")

    @classmethod
    def of(cls, arena: ArenaService) -> ArenaOut:
        limits = arena.limits
        return cls(
            name=arena.name,
            title=arena.config.title,
            modes=arena.modes(),
            models=len(arena.config.models),
            max_turns=limits.max_turns,
            max_prompt_chars=limits.max_prompt_chars,
            daily_votes=limits.daily_votes,
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class RatingOut(BaseModel):
    rank: int = Field(description="1 + the models whose lower bound is above this one's upper bound.")
    model: str
    rating: float = Field(description="Bradley-Terry rating on the Chatbot Arena's scale (mean 1000).")
    rating_lower: float | None = Field(description="The 95% bootstrap interval (null without bootstrap).")
    rating_upper: float | None
    battles: int = Field(description="Counted votes of battles this model was in.")

    @classmethod
    def of(cls, rated: ModelRating) -> RatingOut:
        return cls(
            rank=rated.rank,
            model=rated.model,
            rating=rated.rating,
            rating_lower=_finite(rated.rating_lower),
            rating_upper=_finite(rated.rating_upper),
            battles=rated.battles,
        )


class RatingsOut(BaseModel):
    arena: str
    votes: int = Field(description="Votes counted: those cast while both names were hidden.")
    bootstrap: int = Field(description="Bootstrap rounds of the intervals.")
    rows: list[RatingOut] = Field(description="Best first; empty before the first counted vote.")
    warnings: list[str] = Field(
        description="What a reader must know (a battle graph in pieces, ratings that are not estimates)."
    )

    @classmethod
    def of(cls, arena: ArenaService, ratings: Ratings | None) -> RatingsOut:
        if ratings is None:
            return cls(
                arena=arena.name, votes=0, bootstrap=arena.config.ratings.bootstrap, rows=[], warnings=[]
            )
        return cls(
            arena=arena.name,
            votes=ratings.battles,
            bootstrap=ratings.bootstrap,
            rows=[RatingOut.of(m) for m in ratings.models],
            warnings=list(ratings.warnings),
        )


class BattleIn(Strict):
    prompt: str | None = Field(
        None,
        description="Your question or task (live battles); none for a static battle, which shows a stored "
        "instruction.",
    )
    mode: Mode = "live"


class TurnIn(Strict):
    prompt: str = Field(description="The next question to both models.")


def prompt_bodies(max_chars: int) -> tuple[type[BattleIn], type[TurnIn]]:
    """BattleIn and TurnIn with the arena's prompt limit (LEADERBOARD_ARENA_MAX_PROMPT_CHARS) in their
    schema, so that the spec says what the server accepts."""
    battle = create_model(
        "BattleIn",
        __base__=BattleIn,
        prompt=(
            str | None,
            Field(None, max_length=max_chars, description=BattleIn.model_fields["prompt"].description),
        ),
    )
    turn = create_model(
        "TurnIn",
        __base__=TurnIn,
        prompt=(str, Field(max_length=max_chars, description=TurnIn.model_fields["prompt"].description)),
    )
    return battle, turn


class VoteIn(Strict):
    winner: Winner = Field(description="model_a, model_b, tie, or tie (bothbad) when both answers are bad.")


class TurnOut(BaseModel):
    number: int
    prompt: str
    answer_a: str | None = Field(description="Null until side A's answer is complete.")
    answer_b: str | None


class BattleOut(BaseModel):
    id: int
    mode: Mode
    turns: list[TurnOut]
    model_a: str | None = Field(description="Null until the battle is voted on or revealed.")
    model_b: str | None
    winner: Winner | None
    revealed: bool
    can_vote: bool = Field(description="Both answers of the latest turn are in, and no vote or reveal yet.")
    can_continue: bool = Field(description="Another turn may be asked (live battles, under the turn limit).")

    @classmethod
    def of(cls, view: BattleView) -> BattleOut:
        return cls(
            id=view.id,
            mode=view.mode,
            turns=[
                TurnOut(number=t.number, prompt=t.prompt, answer_a=t.answer_a, answer_b=t.answer_b)
                for t in view.turns
            ],
            model_a=view.model_a,
            model_b=view.model_b,
            winner=view.winner,
            revealed=view.revealed,
            can_vote=view.can_vote,
            can_continue=view.can_continue,
        )


# The answer stream's events (the `data:` of each server-sent event).


class AnswerDelta(BaseModel):
    delta: str = Field(description="The next piece of the answer's text.")


class AnswerDone(BaseModel):
    done: Literal[True]
    finish_reason: str | None = Field(description="stop, or length when max_tokens cut the answer.")


class AnswerProblem(BaseModel):
    code: str = Field(description="answer_failed: ask for the answer again; other codes as the API's errors.")
    message: str = Field(description="What went wrong and what to do (never which model it was).")


class AnswerFailed(BaseModel):
    error: AnswerProblem


AnswerEventOut = AnswerDelta | AnswerDone | AnswerFailed
