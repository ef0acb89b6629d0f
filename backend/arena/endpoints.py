"""Where the arena's models answer: each through an OpenAI-compatible chat endpoint, streamed.

A model with ``endpoint: local`` answers through our own model endpoint (backend.serving, the app
`leaderboard serve-models` serves) run in this process over LEADERBOARD_MODEL_STORE, so the embedded default
needs no second server; any other model through its ``/v1`` base URL (an on-premise vLLM server), with the key
of the environment variable its config names. One client per base URL, made on first use in the event loop
that streams, and closed by ``aclose`` in that loop (after which the next stream makes them again).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx2

from backend.arena.config import ArenaConfig, ArenaGeneration, ArenaModel
from backend.errors import ConfigurationError
from backend.serving.client import ChatCall, ChatMessage
from backend.serving.inprocess import LocalEndpoint, local_endpoint
from backend.serving.streaming import ChatStream
from backend.settings import Settings


@dataclass(frozen=True)
class Piece:
    """A part of a streamed answer: text, and on the last piece the finish reason."""

    text: str = ""
    finish: str | None = None


#: Each wait for an endpoint (connecting, the first token, the next one): a model's first load included.
TIMEOUT_S = 300.0


class ArenaEndpoints:
    """The arena's AnswerStreamer: the configured models' endpoints."""

    def __init__(self, config: ArenaConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.local_models = [m.model for m in config.models if m.is_local]
        if self.local_models and settings.model_store is None:
            raise ConfigurationError(
                f"LEADERBOARD_ARENA: {config.name} has models on the local endpoint ({', '.join(self.local_models)}), "
                "which serves LEADERBOARD_MODEL_STORE: set it to the model store's folder"
            )
        for model in config.models:
            if model.api_key_env is not None and not os.environ.get(model.api_key_env):
                raise ConfigurationError(
                    f"LEADERBOARD_ARENA: {model.name}'s endpoint key is read from {model.api_key_env}, which is "
                    "not set: set it, or remove api_key_env from the model in the arena config"
                )
        self._local: LocalEndpoint | None = None
        self._clients: dict[str, httpx2.AsyncClient] = {}

    def _endpoint(self, model: ArenaModel) -> tuple[httpx2.AsyncClient, str, str | None]:
        if model.is_local:
            if self._local is None:
                self._local = local_endpoint(self.settings, self.local_models, timeout_s=TIMEOUT_S)
            return self._local.client, self._local.base_url, None
        client = self._clients.get(model.endpoint)
        if client is None:
            client = httpx2.AsyncClient(timeout=httpx2.Timeout(TIMEOUT_S, connect=10.0))
            self._clients[model.endpoint] = client
        key = os.environ.get(model.api_key_env) if model.api_key_env else None
        return client, model.endpoint, key

    async def stream(
        self, model: ArenaModel, messages: Sequence[ChatMessage], generation: ArenaGeneration
    ) -> AsyncIterator[Piece]:
        call = ChatCall(
            model=model.model,
            messages=tuple(messages),
            max_tokens=generation.max_tokens,
            temperature=generation.temperature,
            top_p=generation.top_p,
        )
        client, base_url, key = self._endpoint(model)
        async with ChatStream(client, base_url, call, api_key=key) as answer:
            async for text in answer:
                yield Piece(text=text)
        yield Piece(finish=answer.finish_reason or "stop")

    async def aclose(self) -> None:
        local, self._local = self._local, None
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        if local is not None:
            await local.aclose()
