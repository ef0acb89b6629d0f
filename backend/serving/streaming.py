"""Chat completions streamed from any OpenAI-compatible endpoint (a vLLM server, or ours, over the network
or in this process: backend.serving.inprocess): the arena shows two answers side by side as the models
write them.

ChatStream reads one completion's server-sent events into text deltas, then its finish reason and usage,
with ChatClient's request body (ChatCall), errors (ChatEndpointRefused, ChatEndpointUnavailable) and
backoff before the first byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
from pydantic import BaseModel, ConfigDict, ValidationError

from backend.errors import ChatEndpointRefused, ChatEndpointUnavailable
from backend.retry import Backoff
from backend.serving.client import (
    MAX_ANSWER_BYTES,
    ChatCall,
    UsageBlock,
    error_reason,
    is_transient,
    retry_after_seconds,
)
from backend.serving.protocol import Usage

log = logging.getLogger(__name__)

#: Tries before the first byte (a full server's 503, a refused connection); none once the answer streams.
STREAM_BACKOFF = Backoff(attempts=3, base_s=0.5, max_s=4.0)
#: The longest answer read, in characters; past it the stream stops with finish reason "length".
MAX_STREAM_CHARS = 100_000
_ERROR_BODY_BYTES = 64 * 1024


# One chunk of a streamed answer, as far as we read it (fields we do not use are ignored).


class _Delta(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None


class _ChunkChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(BaseModel):
    model_config = ConfigDict(extra="ignore")
    choices: list[_ChunkChoice] = []
    usage: UsageBlock | None = None


def _described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def _error_body(response: httpx2.Response) -> bytes:
    """The start of an error answer (enough for its message), the response closed."""
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= _ERROR_BODY_BYTES:
                break
    except httpx2.TransportError:
        pass
    finally:
        await response.aclose()
    return bytes(data[:_ERROR_BODY_BYTES])


class ChatStream:
    """One completion streamed from an OpenAI-compatible endpoint (``base_url`` ends in /v1):

        async with ChatStream(client, base_url, call, api_key=key) as stream:
            async for text in stream:
                ...
        stream.finish_reason, stream.usage

    Entering sends the request, so that a failure comes before the first word: ChatEndpointRefused for a
    refusal (4xx, with the endpoint's message), ChatEndpointUnavailable once ``backoff``'s tries are spent
    (connection errors, timeouts, 429, 5xx). Once the answer streams, a failure is ChatEndpointUnavailable,
    never tried again. Leaving the block early closes the answer, which stops the endpoint's generation."""

    def __init__(
        self,
        client: httpx2.AsyncClient,
        base_url: str,
        call: ChatCall,
        *,
        api_key: str | None = None,
        max_chars: int = MAX_STREAM_CHARS,
        backoff: Backoff = STREAM_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.call, self.max_chars, self.backoff = call, max_chars, backoff
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.finish_reason: str | None = None  # None until the answer has ended (or when it never did)
        self.usage: Usage | None = None  # when the endpoint gave it
        self.attempts = 0
        self._client, self._api_key, self._sleep = client, api_key, sleep
        self._where = str(httpx2.URL(self.url).copy_with(userinfo=b""))  # never a password of the URL
        self._parts: list[str] = []
        self._chars = self._read = 0
        self._ended = False
        self._response: httpx2.Response | None = None
        self._events: AsyncIterator[httpx2.ServerSentEvent] | None = None

    @property
    def text(self) -> str:
        """The answer so far."""
        return "".join(self._parts)

    async def __aenter__(self) -> ChatStream:
        self._response = await self._open()
        self._events = httpx2.EventSource(self._response).__aiter__()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        if self._events is None:
            raise RuntimeError("open the stream first: `async with ChatStream(...) as stream`")
        while not self._ended:
            try:
                event = await anext(self._events, None)
            except httpx2.SSEError as exc:  # an event past EventSource's size limit
                raise ChatEndpointRefused(f"{self._where} sent an event too large to read") from exc
            except httpx2.TransportError as exc:
                raise self._broken(_described(exc)) from exc
            if event is None:
                if self.finish_reason is None:
                    raise self._broken("the stream ended before the answer did")
                self._ended = True
            elif text := await self._take(event.data):
                return text
        raise StopAsyncIteration

    async def _take(self, data: str) -> str:
        """The text of one event; the finish reason and usage noted, the stream closed past max_chars."""
        if data == "[DONE]":
            self._ended = True
            return ""
        self._read += len(data.encode())
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            payload = None
        if isinstance(payload, dict) and "error" in payload:
            raise self._broken(error_reason(500, data.encode())[0])
        try:
            chunk = _Chunk.model_validate(payload)
        except ValidationError as exc:
            raise ChatEndpointRefused(
                f"{self._where} sent an event that is not a chat completion chunk ({type(exc).__name__})"
            ) from exc
        if chunk.usage is not None:
            self.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        choice = chunk.choices[0] if chunk.choices else _ChunkChoice()
        text = (choice.delta.content or "") if choice.delta else ""
        if self._chars + len(text) > self.max_chars or self._read > MAX_ANSWER_BYTES:
            text = text[: max(0, self.max_chars - self._chars)]
            self.finish_reason, self._ended = "length", True
            await self.aclose()  # the endpoint stops generating
        elif choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        self._parts.append(text)
        self._chars += len(text)
        return text

    def _broken(self, reason: str) -> ChatEndpointUnavailable:
        return ChatEndpointUnavailable(
            f"{self._where} broke off its answer from {self.call.model} ({reason}): check that the endpoint "
            "is running and reachable, then ask again"
        )

    async def _open(self) -> httpx2.Response:
        """The streaming answer, its status and type checked; tried again while the failure is transient."""
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        body = {**self.call.body(), "stream": True, "stream_options": {"include_usage": True}}
        last = ""
        for attempt in range(1, self.backoff.attempts + 1):
            self.attempts, wait = attempt, self.backoff.delay(attempt)
            request = self._client.build_request("POST", self.url, json=body, headers=headers)
            try:
                response = await self._client.send(request, stream=True)
            except httpx2.TransportError as exc:  # refused or reset connections, timeouts
                last = _described(exc)
            else:
                status = response.status_code
                kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if status < 400 and kind == "text/event-stream":
                    return response
                message, code = error_reason(status, await _error_body(response))
                if status < 400:
                    raise ChatEndpointRefused(
                        f"{self._where} answered HTTP {status} with {kind or 'no content type'}, not a stream "
                        "of server-sent events",
                        status,
                    )
                if not is_transient(status):
                    raise ChatEndpointRefused(
                        f"{self._where} refused the request (HTTP {status}): {message}", status, code
                    )
                last = f"HTTP {status}: {message}"
                after = retry_after_seconds(response.headers.get("retry-after"))
                wait = max(wait, min(after, self.backoff.max_s)) if after is not None else wait
            if attempt < self.backoff.attempts:
                log.warning(
                    "chat endpoint stream failed to start, trying again",
                    extra={"url": self._where, "attempt": attempt, "reason": last, "wait_s": wait},
                )
                await self._sleep(wait)
        raise ChatEndpointUnavailable(
            f"{self._where} could not stream a completion with {self.call.model} after {self.backoff.attempts} "
            f"attempts (last: {last}): check that the endpoint is running and reachable"
        )
