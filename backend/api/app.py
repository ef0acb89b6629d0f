"""The FastAPI application over one App (the composition root): routes, errors, limits, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from backend.api import errors, routes_admin, routes_arena, routes_public, routes_writes
from backend.api.deps import Context
from backend.api.limits import RateLimiter
from backend.api.metrics import ApiMetrics
from backend.api.middleware import AccessLog, BodyLimit
from backend.app import App
from backend.asgi import UnexpectedErrors
from backend.services.auth import build_authenticator
from backend.storage.stats import StatsRepository
from backend.storage.tokens import TokenRepository
from backend.web import actions, arena, oauth, pages, plots, submit
from backend.web.session import Sessions

DESCRIPTION = """Submit models, vote, follow the queue and read the results of the leaderboard.

Writes need `Authorization: Bearer <token>`: a Hugging Face token (verified with the Hub) or an API token
issued by `leaderboard admin token create USER [--admin]`. Every error has one shape:
`{"error": {"code": ..., "message": ..., "status": ...}}`.
"""


class Background(Protocol):
    """Something that runs beside the API in the same process (the scheduler)."""

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


def create_api(app: App, background: Sequence[Background] = ()) -> FastAPI:
    """The API over ``app``; ``background`` services start with the server and stop before it exits (the
    server's lifespan: uvicorn re-raises SIGTERM once it has shut down, so later cleanup would not run), and
    then the arena's model endpoints close, in the event loop that streamed from them."""
    settings = app.settings
    served_arena = app.arena  # built now: a bad LEADERBOARD_ARENA stops the server at its start

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started: list[Background] = []
        try:
            for service in background:
                service.start()
                started.append(service)
            yield
        finally:
            try:
                for service in reversed(started):
                    await asyncio.to_thread(service.shutdown)
            finally:
                if served_arena is not None and served_arena.streamer is not None:
                    await served_arena.streamer.aclose()

    api = FastAPI(title="Leaderboard backend", version="1", description=DESCRIPTION, lifespan=lifespan)
    auth = build_authenticator(settings, TokenRepository(app.db), app.clock)
    limiter = RateLimiter(
        {
            "vote": (settings.api_votes_per_minute, 60.0),
            "submission": (settings.api_submissions_per_hour, 3600.0),
            "signin": (settings.api_signins_per_minute, 60.0),
            routes_arena.BATTLE: (settings.arena_battles_per_minute, 60.0),
            routes_arena.VOTE: (settings.arena_votes_per_minute, 60.0),
        }
    )
    leaderboard = app.leaderboard
    app.leaderboards  # noqa: B018 (every judged config loads now: a bad LEADERBOARD_JUDGED stops the start)
    api.state.context = Context(app=app, auth=auth, limiter=limiter, leaderboard=leaderboard)
    api.state.sessions = Sessions(
        settings.session_secret.get_secret_value() if settings.session_secret else None,
        settings.session_hours,
    )
    metrics = ApiMetrics(StatsRepository(app.db))
    api.state.registry = metrics.registry
    api.state.error_counter = metrics.errors

    errors.install(api)
    api.include_router(routes_public.build(settings.max_page_size, leaderboard.columns))
    api.include_router(routes_writes.build())
    api.include_router(routes_admin.build())
    prompt_chars = served_arena.limits.max_prompt_chars if served_arena else settings.arena_max_prompt_chars
    api.include_router(routes_arena.build(prompt_chars))
    api.include_router(pages.build())
    api.include_router(actions.build())
    api.include_router(submit.build())
    api.include_router(oauth.build(oauth.hub_oauth(settings)))
    api.include_router(plots.build())
    api.include_router(arena.build(prompt_chars))
    api.mount("/static", StaticFiles(packages=[("backend.web", "static")]), name="static")
    # Outermost last: the access log sees the 413s of the body limit and the 500s of unexpected errors.
    api.add_middleware(
        UnexpectedErrors, answer=errors.internal_error, log=errors.log, count=errors.count_internal_error
    )
    api.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    api.add_middleware(AccessLog, requests_counter=metrics.requests, latency=metrics.latency)
    return api
