"""The model server's ASGI app: GET /v1/models, POST /v1/chat/completions (streamed or not), GET /health.

Every error has OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: invalid input is a 400
naming the field, an unknown model a 404, a missing key a 401, a full server a 503 with Retry-After, an
unknown path a 404; anything unexpected a 500 without detail (logged here, once). Loading and generation
run in a pool of worker threads (one per model that can be loaded at once), never on the event loop; at
most ``max_pending`` requests are in progress, the rest are told to come back.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from backend.asgi import UnexpectedErrors
from backend.errors import (
    ChatRequestInvalid,
    LeaderboardError,
    ModelNotServable,
    ModelSourceError,
    RepoFileRefused,
    ServerBusy,
    ServingKeyRefused,
)
from backend.serving.generation import Completion, Delta, Sampling, generate
from backend.serving.models import Catalog, LoadedModel, ModelPool, ServedModel
from backend.serving.protocol import (
    ChatRequest,
    Limits,
    error_json,
    logprobs_content,
    parse_chat_request,
    usage_json,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def error_response(status: int, message: str, code: str | None, param: str | None = None) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(error_json(status, message, code, param), status_code=status, headers=headers)


def _internal_error() -> JSONResponse:
    return error_response(500, "internal error: it is logged on the server", "internal_error")


@dataclass
class _Call:
    """One completion being answered: its request, model, prompt and settings."""

    request: ChatRequest
    loaded: LoadedModel
    prompt: list[int]
    sampling: Sampling
    id: str
    created: int

    def head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "model": self.request.model,
            "system_fingerprint": f"{self.loaded.repo_id}@{self.loaded.sha}",
        }


def _prepare(loaded: LoadedModel, request: ChatRequest, limits: Limits) -> tuple[list[int], Sampling]:
    """The prompt's tokens and the sampling settings, with max_tokens checked against the context left."""
    with loaded.lock:
        prompt = loaded.chat_prompt([{"role": m.role, "content": m.content} for m in request.messages])
    room = loaded.context_length - len(prompt)
    wanted = request.requested_max_tokens
    if room < 1 or (wanted is not None and wanted > room):
        raise ChatRequestInvalid(
            f"the prompt has {len(prompt)} tokens and {wanted or 1} more were asked for, but the model's "
            f"context holds {loaded.context_length}: shorten the messages or ask for fewer tokens",
            param="messages",
            reason="context_length_exceeded",
        )
    sampling = Sampling(
        max_tokens=min(wanted or limits.max_tokens, room),
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=request.stop_sequences,
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
    )
    return prompt, sampling


def _completion_json(call: _Call, completion: Completion) -> dict[str, Any]:
    logprobs = None
    if call.sampling.top_logprobs is not None:
        logprobs = {"content": logprobs_content(completion.tokens), "refusal": None}
    return {
        **call.head(),
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": logprobs,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_json(completion.usage),
    }


def _chunk(call: _Call, delta: dict[str, Any], **choice: Any) -> bytes:
    body = {
        **call.head(),
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, **choice}],
    }
    return _event(body)


def _event(body: dict[str, Any] | str) -> bytes:
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class _Slots:
    """Requests in progress, at most ``limit`` (counted on the event loop's thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> None:
        if self.taken >= self.limit:
            raise ServerBusy()
        self.taken += 1

    def give_back(self) -> None:
        self.taken -= 1


class _EventStream(StreamingResponse):
    """Server-sent events that give their slot back when they end, however they end (a client that goes
    away before the first event included)."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Close the events now, not when the generator is collected: that is what stops the generation
            # of a client that went away while a send was blocked.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()
            self.on_close()


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = ChatRequestInvalid(
        f"the request body is larger than the {limit} bytes this server reads",
        reason="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def create_serving_app(
    catalog: Catalog,
    pool: ModelPool,
    limits: Limits | None = None,
    api_key: str | None = None,
    max_pending: int = 32,
) -> FastAPI:
    """The app over ``catalog``'s models, loaded by ``pool``; ``api_key`` set: every /v1 call needs it."""
    limits = limits or Limits()
    executor = ThreadPoolExecutor(max_workers=pool.max_loaded, thread_name_prefix="serving")
    slots = _Slots(max_pending)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="leaderboard model server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(UnexpectedErrors, answer=_internal_error, log=log)

    async def in_worker(function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(function, *args))

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise ServingKeyRefused()

    @app.exception_handler(LeaderboardError)
    async def leaderboard_error(request: Request, exc: LeaderboardError) -> JSONResponse:
        if isinstance(exc, ChatRequestInvalid):
            return error_response(exc.http_status, exc.message, exc.reason, exc.param)
        if exc.http_status >= 500:
            log.error("request failed", extra={"code": exc.code, "error": exc.message})
        about_model = isinstance(exc, ModelSourceError | ModelNotServable | RepoFileRefused)
        return error_response(exc.http_status, exc.message, exc.code, "model" if about_model else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase
        code = phrase.lower().replace(" ", "_")
        message = f"{request.method} {request.url.path}: {phrase.lower()}"
        response = error_response(exc.status_code, message, code)
        if exc.status_code == 405 and exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return error_response(
            400, f"invalid {param or 'request'}: {first.get('msg', '')}", "invalid_value", param
        )

    def model_json(model: ServedModel) -> dict[str, Any]:
        owner = model.repo_id.split("/", 1)[0]
        return {"id": model.id, "object": "model", "created": catalog.created(model), "owned_by": owner}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """For readiness probes (no key needed): the completions in progress, of at most ``max_pending``."""
        return {"status": "ok", "in_progress": slots.taken, "max_pending": slots.limit}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_json(m) for m in catalog.served()]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(authorized)])
    async def one_model(name: str) -> dict[str, Any]:
        return model_json(catalog.find(name))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        chat = parse_chat_request(await _read_body(request, limits.max_body_bytes), limits)
        served = catalog.find(chat.model)
        slots.take()
        handed_over = False
        try:
            loaded = await in_worker(pool.get, served)
            prompt, sampling = await in_worker(_prepare, loaded, chat, limits)
            call = _Call(chat, loaded, prompt, sampling, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))
            if chat.stream:
                include_usage = chat.stream_options is not None and chat.stream_options.include_usage
                response = _EventStream(_stream(call, include_usage), slots.give_back)
                handed_over = True
                return response
            started = time.monotonic()
            completion = await in_worker(generate, loaded, prompt, sampling)
            _log_completion(call, completion, time.monotonic() - started)
            return JSONResponse(_completion_json(call, completion))
        finally:
            if not handed_over:
                slots.give_back()

    async def _stream(call: _Call, include_usage: bool) -> AsyncIterator[bytes]:
        """Server-sent events: the role, the text as it is released, the finish reason, [DONE]. The worker
        stops at its next token when the client goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | Completion | BaseException] = asyncio.Queue()
        cancelled = threading.Event()
        started = time.monotonic()

        def put(item: Delta | Completion | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                put(generate(call.loaded, call.prompt, call.sampling, put, cancelled))
            except Exception as exc:
                put(exc)

        try:
            worker = loop.run_in_executor(executor, work)
            yield _chunk(call, {"role": "assistant", "content": ""})
            while True:
                item = await queue.get()
                if isinstance(item, Delta):
                    logprobs = None
                    if call.sampling.top_logprobs is not None:
                        logprobs = {"content": logprobs_content(item.tokens), "refusal": None}
                    yield _chunk(call, {"content": item.text}, logprobs=logprobs)
                    continue
                if isinstance(item, Completion):
                    _log_completion(call, item, time.monotonic() - started)
                    yield _chunk(call, {}, finish_reason=item.finish_reason)
                    if include_usage:
                        usage = {"choices": [], "usage": usage_json(item.usage)}
                        yield _event({**call.head(), "object": "chat.completion.chunk", **usage})
                else:
                    log.error("generation failed", exc_info=item, extra={"model": call.loaded.repo_id})
                    yield _event(
                        error_json(500, "internal error: it is logged on the server", "internal_error")
                    )
                break
            yield _event("[DONE]")
            await worker
        finally:
            cancelled.set()

    return app


def _log_completion(call: _Call, completion: Completion, seconds: float) -> None:
    log.info(
        "chat completion",
        extra={
            "model": call.loaded.repo_id,
            "sha": call.loaded.sha,
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
            "finish_reason": completion.finish_reason,
            "seconds": round(seconds, 3),
        },
    )
