"""The arena over HTTP: what it offers and its ratings (anyone), and battles (their owner, signed in).

``battle_routes`` builds the battle operations once for two callers: the API (a bearer token) and the arena
page (backend/web/arena.py: the session cookie and its CSRF token), so both go through the same service
calls, limits and error shape. Starting a battle or asking a turn (each costs two generations) and voting
are limited per client address, the connection's (request.client), never a header the client sets. A
deployment without an arena answers 404 arena_not_configured on every route (to a battle route's caller once
signed in, as every write checks the caller first).

An answer streams as server-sent events. Who may read it is checked before the response starts, so a
battle that is not the caller's is a 404 in the one error shape; a failure after that is an error event.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Request, status
from fastapi.sse import EventSourceResponse

from backend.api.deps import Ctx, User, known_query_only
from backend.api.routes_public import MAX_ID
from backend.api.schemas import ErrorBody
from backend.api.schemas_arena import (
    AnswerDelta,
    AnswerDone,
    AnswerEventOut,
    AnswerFailed,
    AnswerProblem,
    ArenaOut,
    BattleIn,
    BattleOut,
    RatingsOut,
    Side,
    TurnIn,
    VoteIn,
    prompt_bodies,
)
from backend.errors import LeaderboardError
from backend.services.arena import ArenaService, require
from backend.services.redact import strip_server_paths

log = logging.getLogger(__name__)

#: The limiter's actions (api/app.py gives each its LEADERBOARD_ARENA_* limit), counted per client address.
BATTLE = "arena battle"
VOTE = "arena vote"
INTERNAL_ERROR = "internal error: it is logged on the server; ask for the answer again"

_WHY = {
    401: "No token, or one that is not valid: sign in.",
    404: "No arena here (arena_not_configured), or no such battle of yours (battle_not_found).",
    409: "The battle cannot take this now (battle_refused, with the rule and the fix), or no two models can "
    "battle (no_battle_possible).",
    413: "The request body is too large.",
    422: "Invalid input: the message names the field.",
    429: "Too many battles, turns or votes from this address, or today's votes are cast: see Retry-After.",
    503: "The database cannot be reached now.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in statuses}


def json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``errors`` for an operation whose success is not JSON (FastAPI would document its errors in the
    success's media type): ErrorBody as application/json, as they are sent."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {code: {"description": _WHY[code], "content": body} for code in statuses}


READ = errors(404, 422, 503)
WRITE = errors(401, 404, 409, 413, 422, 429, 503)

BattleId = Annotated[int, Path(ge=1, le=MAX_ID, description="The battle's id.")]


def served_arena(ctx: Ctx) -> ArenaService:
    """The deployment's arena, or ArenaNotConfigured (404)."""
    return require(ctx.app.arena)


Arena = Annotated[ArenaService, Depends(served_arena)]


def client_address(request: Request) -> str:
    """The address of the connection: what the per-address limits count (a header such as X-Forwarded-For is
    set by the client, so it is never read)."""
    return request.client.host if request.client else "unknown"


async def answer_events(
    arena: ArenaService, battle_id: int, user: str, side: str
) -> AsyncIterator[AnswerEventOut]:
    """The service's answer events as the stream's. The response has begun, so a failure is an event."""
    try:
        # An async generator (the service's answer), closed here when this stream is: its claim is released.
        stream = arena.answer(battle_id, user, side)
        async with aclosing(stream) as events:
            async for event in events:
                if event.error is not None:
                    yield AnswerFailed(error=AnswerProblem(code="answer_failed", message=event.error))
                elif event.done:
                    yield AnswerDone(done=True, finish_reason=event.finish)
                elif event.delta:
                    yield AnswerDelta(delta=event.delta)
    except LeaderboardError as exc:
        log.warning("arena answer stopped", extra={"battle": battle_id, "side": side, "code": exc.code})
        yield AnswerFailed(error=AnswerProblem(code=exc.code, message=strip_server_paths(exc.message)))
    except Exception:  # the stream's 500: logged once here, told without detail
        log.exception("arena answer failed unexpectedly", extra={"battle": battle_id, "side": side})
        yield AnswerFailed(error=AnswerProblem(code="internal_error", message=INTERNAL_ERROR))


def battle_routes(
    caller: Callable[..., str], include_in_schema: bool, prefix: str, max_prompt_chars: int
) -> APIRouter:
    """The battle operations under ``prefix``, as the user ``caller`` (a dependency) names."""
    BattleBody, TurnBody = prompt_bodies(max_prompt_chars)
    router = APIRouter(
        prefix=prefix,
        tags=["arena"],
        include_in_schema=include_in_schema,
        # Who calls first (401, as for any write), then whether there is an arena at all (404).
        dependencies=[Depends(known_query_only), Depends(caller), Depends(served_arena)],
    )
    Caller = Annotated[str, Depends(caller)]

    @router.post("", response_model=BattleOut, status_code=status.HTTP_201_CREATED, responses=WRITE)
    def start(
        body: BattleBody,  # type: ignore[valid-type]
        request: Request,
        ctx: Ctx,
        arena: Arena,
        user: Caller,
    ) -> BattleOut:
        """Start a battle: two models of the roster, drawn by the server and unnamed, will answer your prompt
        (live), or show two stored answers to a judged leaderboard's instruction (static, no prompt). Read
        the answers from .../answers/a and .../answers/b."""
        address = client_address(request)
        ctx.limiter.hit(address, BATTLE)
        asked = cast(BattleIn, body)  # BattleBody is a BattleIn with the prompt limit
        return BattleOut.of(arena.start(user, address, asked.prompt, asked.mode))

    @router.get("/{battle_id}", response_model=BattleOut, responses=errors(401, 404, 422, 503))
    def battle(battle_id: BattleId, arena: Arena, user: Caller) -> BattleOut:
        """One of your battles: its turns, the answers complete so far, and the names once voted on or
        revealed."""
        return BattleOut.of(arena.battle(battle_id, user))

    @router.post("/{battle_id}/turns", response_model=BattleOut, responses=WRITE)
    def continue_battle(
        battle_id: BattleId,
        body: TurnBody,  # type: ignore[valid-type]
        request: Request,
        ctx: Ctx,
        arena: Arena,
        user: Caller,
    ) -> BattleOut:
        """Ask both models of a live battle one more question, once both answered the last one."""
        ctx.limiter.hit(client_address(request), BATTLE)
        return BattleOut.of(arena.continue_battle(battle_id, user, cast(TurnIn, body).prompt))

    def owned(battle_id: BattleId, arena: Arena, user: Caller) -> None:
        """Before the stream starts: the battle is the caller's (else a 404 in the one error shape)."""
        arena.battle(battle_id, user)

    @router.post(
        "/{battle_id}/answers/{side}",
        response_class=EventSourceResponse,
        responses=json_errors(401, 404, 413, 422, 503),
        dependencies=[Depends(owned)],
    )
    async def answer(
        battle_id: BattleId,
        side: Annotated[Side, Path(description="a or b")],
        arena: Arena,
        user: Caller,
    ) -> AsyncIterator[AnswerEventOut]:
        """Side a's or b's answer to the latest turn, as server-sent events: `{"delta": text}` as it is
        generated, then `{"done": true, "finish_reason": ...}`, or `{"error": {"code", "message"}}` (ask
        again). An answer already complete is sent whole; one is generated once, whoever asks."""
        async for event in answer_events(arena, battle_id, user, side):
            yield event

    @router.post("/{battle_id}/vote", response_model=BattleOut, responses=WRITE)
    def vote(
        battle_id: BattleId, body: VoteIn, request: Request, ctx: Ctx, arena: Arena, user: Caller
    ) -> BattleOut:
        """Your one vote on your battle, once both answers are in; the battle comes back with both names.
        Only votes cast while the names are hidden count."""
        ctx.limiter.hit(client_address(request), VOTE)
        return BattleOut.of(arena.vote(battle_id, user, body.winner))

    @router.post("/{battle_id}/reveal", response_model=BattleOut, responses=WRITE)
    def reveal(battle_id: BattleId, arena: Arena, user: Caller) -> BattleOut:
        """The names without a vote: the battle then takes no vote."""
        return BattleOut.of(arena.reveal(battle_id, user))

    return router


def api_user(caller: User) -> str:
    return caller.user


def build(max_prompt_chars: int) -> APIRouter:
    """``max_prompt_chars``: the arena's prompt limit, written in the spec."""
    router = APIRouter(dependencies=[Depends(known_query_only)])

    @router.get("/api/arena", response_model=ArenaOut, responses=READ, tags=["arena"])
    def arena_info(arena: Arena) -> ArenaOut:
        """The arena: its name and title, the kinds of battle it offers now, and how many models battle (never
        which is where)."""
        return ArenaOut.of(arena)

    @router.get("/api/arena/ratings", response_model=RatingsOut, responses=READ, tags=["arena"])
    def ratings(arena: Arena) -> RatingsOut:
        """The arena's table: Bradley-Terry ratings of every vote cast while both names were hidden, with
        95% bootstrap intervals and ranks, best first; the warnings say what a reader must know."""
        return RatingsOut.of(arena, arena.ratings())

    router.include_router(battle_routes(api_user, True, "/api/arena/battles", max_prompt_chars))
    return router
