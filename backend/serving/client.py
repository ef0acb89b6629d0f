"""A client for OpenAI-compatible chat endpoints (ours, `leaderboard serve-models`, or a vLLM server).

Each call has a timeout, at most ``max_concurrency`` calls are on the wire at once (``complete_many`` runs
that many in threads), and a transient failure (a connection error or timeout, 429, 5xx) is tried again with
exponential backoff (backend.retry.Backoff; a Retry-After the endpoint sends is honoured, within the
backoff's longest wait). The answer is parsed once, here, into a ChatResult: the text, the per-token
logprobs, the usage, and how long the call took.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx2
from pydantic import BaseModel, ConfigDict, ValidationError

from backend.errors import ChatEndpointRefused, ChatEndpointUnavailable
from backend.retry import Backoff
from backend.serving.protocol import TokenLogprob, TopLogprob, Usage

log = logging.getLogger(__name__)

DEFAULT_BACKOFF = Backoff(attempts=4, base_s=1.0, max_s=30.0)
#: Largest answer read: a completion of thousands of tokens with 20 alternatives each is a few MB.
MAX_ANSWER_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system, user or assistant
    content: str


@dataclass(frozen=True)
class ChatCall:
    """One chat completion to ask for. temperature 0 is greedy; logprobs with top_logprobs alternatives."""

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        optional = {"top_p": self.top_p, "seed": self.seed, "top_logprobs": self.top_logprobs}
        body.update({key: value for key, value in optional.items() if value is not None})
        if self.stop:
            body["stop"] = list(self.stop)
        if self.logprobs:
            body["logprobs"] = True
        return body


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str | None
    tokens: tuple[TokenLogprob, ...]  # empty unless logprobs were asked for
    usage: Usage | None  # None when the endpoint gave none
    model: str
    seconds: float  # the whole call: every attempt and the waits between them
    attempts: int


# The answer, as far as we read it (fields we do not use are ignored, so any compatible server will do).


class _Alternative(BaseModel):
    model_config = ConfigDict(extra="ignore")
    token: str
    logprob: float
    bytes: list[int] | None = None


class _Token(_Alternative):
    top_logprobs: list[_Alternative] = []


class _Logprobs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: list[_Token] | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class UsageBlock(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int
    completion_tokens: int


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = ""
    choices: list[_Choice]
    usage: UsageBlock | None = None


def _raw(values: list[int] | None) -> bytes | None:
    return None if values is None or any(not 0 <= v < 256 for v in values) else bytes(values)


def _result(answer: _Answer, model: str, seconds: float, attempts: int) -> ChatResult:
    choice = answer.choices[0]
    tokens = tuple(
        TokenLogprob(
            t.token,
            t.logprob,
            _raw(t.bytes),
            tuple(TopLogprob(a.token, a.logprob, _raw(a.bytes)) for a in t.top_logprobs),
        )
        for t in (choice.logprobs.content or [] if choice.logprobs else [])
    )
    usage = Usage(answer.usage.prompt_tokens, answer.usage.completion_tokens) if answer.usage else None
    return ChatResult(
        text=choice.message.content or "",
        finish_reason=choice.finish_reason,
        tokens=tokens,
        usage=usage,
        model=answer.model or model,
        seconds=seconds,
        attempts=attempts,
    )


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def is_transient(status: int) -> bool:
    """An HTTP status worth trying again: too many requests, or the server failing."""
    return status == 429 or status >= 500


def error_reason(status: int, data: bytes) -> tuple[str, str | None]:
    """The message and code of an error answer in OpenAI's shape, or its status when it is not."""
    answer = _json(data)
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return error["message"][:500], code if isinstance(code, str) else None
    return f"HTTP {status}", None


def retry_after_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date, or nonsense: the backoff decides
        return None


@dataclass(frozen=True)
class _Transient:
    """One attempt failed in a way that may pass: try again (after ``wait_s`` when the endpoint said)."""

    reason: str
    wait_s: float | None = None


class ChatClient:
    """Chat completions from one endpoint (its base URL ends in /v1, as OpenAI clients take it)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        max_concurrency: int = 4,
        backoff: Backoff = DEFAULT_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency is at least 1")
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.backoff = backoff
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max_concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.Client(
            headers=headers,
            timeout=httpx2.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx2.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[str]:
        """The ids of the models the endpoint serves."""
        answer, _ = self._call("GET", "/models", None, "list the models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise ChatEndpointRefused(f"{self.base_url}/models answered something that is not a model list")
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def chat(self, model: str, messages: Sequence[ChatMessage], **options: Any) -> ChatResult:
        """One completion; ``options`` are ChatCall's (max_tokens, temperature, seed, stop, logprobs...)."""
        return self.complete(ChatCall(model, tuple(messages), **options))

    def complete(self, call: ChatCall) -> ChatResult:
        started = time.monotonic()
        answer, attempts = self._call("POST", "/chat/completions", call.body(), f"complete with {call.model}")
        try:
            parsed = _Answer.model_validate(answer)
            if not parsed.choices:
                raise ValueError("no choices")
        except (ValidationError, ValueError) as exc:
            raise ChatEndpointRefused(
                f"{self.base_url}/chat/completions answered something that is not a chat completion "
                f"({type(exc).__name__})"
            ) from exc
        return _result(parsed, call.model, time.monotonic() - started, attempts)

    def complete_many(self, calls: Sequence[ChatCall]) -> list[ChatResult]:
        """Every call, ``max_concurrency`` at a time, the results in the calls' order; the first failure
        is raised once the calls under way have ended."""
        if not calls:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(calls))) as pool:
            futures = [pool.submit(self.complete, call) for call in calls]
            return [future.result() for future in futures]

    def _call(self, method: str, path: str, body: dict[str, Any] | None, what: str) -> tuple[Any, int]:
        """The JSON answer of a call and the attempts it took; retried while the failure is transient."""
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(1, self.backoff.attempts + 1):
            outcome = self._attempt(method, url, body)
            if not isinstance(outcome, _Transient):
                return outcome, attempt
            last = outcome.reason
            if attempt == self.backoff.attempts:
                break
            wait = self.backoff.delay(attempt)
            if outcome.wait_s is not None:
                wait = max(wait, min(outcome.wait_s, self.backoff.max_s))
            log.warning(
                "chat endpoint call failed, trying again",
                extra={"url": url, "attempt": attempt, "reason": outcome.reason, "wait_s": wait},
            )
            self._sleep(wait)
        raise ChatEndpointUnavailable(
            f"{url} could not {what} after {self.backoff.attempts} attempts (last: {last}): check that the "
            "endpoint is running and reachable"
        )

    def _attempt(self, method: str, url: str, body: dict[str, Any] | None) -> Any | _Transient:
        """The JSON answer, or the transient failure of this attempt; ChatEndpointRefused for a refusal."""
        with self._slots:
            try:
                with self._http.stream(method, url, json=body) as response:
                    status, retry_after = response.status_code, response.headers.get("retry-after")
                    data = bytearray()
                    for chunk in response.iter_bytes():
                        data += chunk
                        if len(data) > MAX_ANSWER_BYTES:
                            raise ChatEndpointRefused(
                                f"{url} answered more than {MAX_ANSWER_BYTES} bytes", status
                            )
            except httpx2.TransportError as exc:  # refused or reset connections, timeouts, broken answers
                return _Transient(f"{type(exc).__name__}: {exc}"[:300])
        if is_transient(status):
            message, _ = error_reason(status, bytes(data))
            return _Transient(f"HTTP {status}: {message}", retry_after_seconds(retry_after))
        if status >= 400:
            message, code = error_reason(status, bytes(data))
            raise ChatEndpointRefused(f"{url} refused the request (HTTP {status}): {message}", status, code)
        answer = _json(bytes(data))
        if answer is None:
            raise ChatEndpointRefused(f"{url} answered HTTP {status} with a body that is not JSON", status)
        return answer
