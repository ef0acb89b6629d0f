"""The wire format of the subset of OpenAI's chat completions API we serve and call.

A request body is parsed here once into a typed ChatRequest (unknown fields are ignored, as OpenAI-compatible
servers do; fields we know but cannot honour are refused by name). The records a completion is made of
(TokenLogprob, Usage) are shared by the server, which renders them, and the client, which parses them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backend.errors import ChatRequestInvalid

#: OpenAI's limits on these fields.
MAX_TOP_LOGPROBS = 20
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_MODEL_CHARS = 300
#: A logprob JSON cannot carry (-inf) is sent as OpenAI sends a token it did not score.
NO_LOGPROB = -9999.0
INT64 = 2**63


@dataclass(frozen=True)
class Limits:
    """How large a request may be: the server's settings (LEADERBOARD_SERVE_MAX_*)."""

    max_messages: int = 128
    max_prompt_chars: int = 100_000
    max_tokens: int = 1024

    @property
    def max_body_bytes(self) -> int:
        """Largest body read: every character escaped (\\uXXXX, six bytes), plus room for the other fields."""
        return 6 * self.max_prompt_chars + 64 * 1024


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    include_usage: bool = False


class ChatRequest(BaseModel):
    """A POST /v1/chat/completions body."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stop: str | list[str] | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Known, and refused unless left at their defaults: ignoring them would answer a different request.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is served (send the request again for another choice)")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("penalties are not served: leave it at 0")
        return value

    @field_validator("logit_bias", "tools")
    @classmethod
    def _not_served(cls, value: Any) -> Any:
        if value:
            raise ValueError("not served: leave it out")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, value: str | list[str] | None) -> str | list[str] | None:
        sequences = [value] if isinstance(value, str) else value or []
        if len(sequences) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not 0 < len(s) <= MAX_STOP_CHARS for s in sequences):
            raise ValueError(f"a stop sequence has 1 to {MAX_STOP_CHARS} characters")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only the text response format is served")
        return value

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def requested_max_tokens(self) -> int | None:
        """max_completion_tokens (OpenAI's current name) or else max_tokens; None: as many as fit."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def _param(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "body"


def parse_chat_request(body: bytes, limits: Limits) -> ChatRequest:
    """The typed request of a body, or ChatRequestInvalid naming the field (its ``param``) that is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested past what the parser takes
        raise ChatRequestInvalid(
            "the request body is not valid JSON: send a JSON object", reason="invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise ChatRequestInvalid("the request body must be a JSON object", reason="invalid_json")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        param = _param(tuple(error["loc"]))
        problem = str(error["msg"]).removeprefix("Value error, ")
        raise ChatRequestInvalid(f"invalid {param}: {problem}", param=param) from None
    _check_limits(request, limits)
    return request


def _check_limits(request: ChatRequest, limits: Limits) -> None:
    if len(request.messages) > limits.max_messages:
        raise ChatRequestInvalid(
            f"{len(request.messages)} messages are more than the {limits.max_messages} this server takes",
            param="messages",
        )
    chars = sum(len(m.content) for m in request.messages)
    if chars > limits.max_prompt_chars:
        raise ChatRequestInvalid(
            f"the messages have {chars} characters, more than the {limits.max_prompt_chars} this server takes",
            param="messages",
        )
    wanted = request.requested_max_tokens
    if wanted is not None and wanted > limits.max_tokens:
        field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise ChatRequestInvalid(
            f"{field} is {wanted}, more than the {limits.max_tokens} this server generates per request",
            param=field,
        )
    if request.top_logprobs is not None and request.top_logprobs > 0 and not request.logprobs:
        raise ChatRequestInvalid("top_logprobs needs logprobs set to true", param="top_logprobs")


# The records a completion is made of, shared by the server and the client.


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: bytes | None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log-probability under the model (before temperature and top_p), bytes
    and the most likely alternatives at its position, most likely first."""

    token: str
    logprob: float
    bytes: bytes | None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _finite(value: float) -> float:
    return value if value > NO_LOGPROB else NO_LOGPROB


def _wire_bytes(value: bytes | None) -> list[int] | None:
    return None if value is None else list(value)


def logprobs_content(tokens: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content``: one entry per token with its ``top_logprobs``."""
    return [
        {
            "token": t.token,
            "logprob": _finite(t.logprob),
            "bytes": _wire_bytes(t.bytes),
            "top_logprobs": [
                {"token": a.token, "logprob": _finite(a.logprob), "bytes": _wire_bytes(a.bytes)}
                for a in t.top
            ],
        }
        for t in tokens
    ]


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def error_json(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, the one every error of the model server has."""
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
