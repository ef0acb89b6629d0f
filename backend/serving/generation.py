"""The decoding loop: one token at a time over the model's KV cache, so that each step's logits give the
token's logprob and its alternatives, and text can be released as it is made.

Temperature 0 is greedy (argmax: the same request always gives the same tokens and logprobs); above 0 the
token is sampled from the temperature-scaled, top_p-truncated distribution with a generator seeded by the
request's seed. Logprobs are those of the model's own distribution (log_softmax of its logits, before
temperature and top_p), as vLLM reports them. Text is released only when no stop sequence can still begin
in it and it ends on a whole character, so streamed pieces always add up to the final text; a stop sequence
ends the completion and is cut from it, with the tokens that began after the cut.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.serving.models import LoadedModel
from backend.serving.protocol import TokenLogprob, TopLogprob, Usage


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs at all; 0: the chosen token's only


@dataclass(frozen=True)
class Delta:
    """Text released by one step (maybe empty) and the tokens it came from."""

    text: str
    tokens: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # stop (end of turn or a stop sequence), length (max_tokens) or cancelled
    tokens: tuple[TokenLogprob, ...]
    usage: Usage


def stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop sequence begins in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters must wait: the start of a stop sequence, or a partial character."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    if text.endswith("\ufffd"):  # the bytes of a character still coming
        held = max(held, len(text) - len(text.rstrip("\ufffd")))
    return held


@dataclass
class _Text:
    """The text released so far, and the tokens waiting for theirs to be released."""

    released: str = ""
    pending: list[tuple[int, int, TokenLogprob | None]] = field(default_factory=list)  # (start, end, token)
    tokens: list[TokenLogprob] = field(default_factory=list)

    def _take(self, new: str, going: list[TokenLogprob | None]) -> Delta:
        self.released += new
        kept = tuple(token for token in going if token is not None)
        self.tokens.extend(kept)
        return Delta(new, kept)

    def release(self, text: str, end: int) -> Delta:
        """Release ``text[:end]`` and the tokens whose text ends within it."""
        count = 0
        while count < len(self.pending) and self.pending[count][1] <= end:
            count += 1
        going = [token for _, _, token in self.pending[:count]]
        del self.pending[:count]
        return self._take(text[len(self.released) : end], going)

    def finish(self, text: str, cut: int | None) -> Delta:
        """Release the rest: all of ``text``, or what comes before a stop sequence at ``cut`` and the
        tokens that began before it."""
        end = len(text) if cut is None else cut
        going = [token for start, _, token in self.pending if cut is None or start < cut]
        self.pending = []
        return self._take(text[len(self.released) : end], going)


def _choose(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        before = torch.cumsum(ordered, dim=-1) - ordered  # mass of the more likely tokens
        ordered[before >= sampling.top_p] = 0.0  # the most likely token always stays
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


def _entry(loaded: LoadedModel, token_id: int, logprobs: Any, top: int) -> TokenLogprob:
    import torch

    text, raw = loaded.token_text(token_id)
    alternatives: list[TopLogprob] = []
    if top:
        values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
        for value, alternative in zip(values.tolist(), ids.tolist(), strict=True):
            alternative_text, alternative_raw = loaded.token_text(alternative)
            alternatives.append(TopLogprob(alternative_text, float(value), alternative_raw))
    return TokenLogprob(text, float(logprobs[token_id]), raw, tuple(alternatives))


def generate(
    loaded: LoadedModel,
    prompt: list[int],
    sampling: Sampling,
    on_delta: Callable[[Delta], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Completion:
    """Complete ``prompt`` (token ids) under the model's lock; ``on_delta`` gets text as it is released."""
    import torch

    with loaded.lock, torch.inference_mode():
        generator = None
        if sampling.temperature > 0:
            generator = torch.Generator(device=loaded.device)
            generator.manual_seed(sampling.seed if sampling.seed is not None else secrets.randbits(63))
        state = _Text()
        generated = 0  # every sampled token, an end of turn included: usage counts it
        content: list[int] = []  # the tokens of the text
        inputs = torch.tensor([prompt], device=loaded.device)
        cache = None
        finish, cut, text = "length", None, ""
        for _ in range(sampling.max_tokens):
            if cancelled is not None and cancelled.is_set():
                finish = "cancelled"
                break
            logits, cache = loaded.step(inputs, cache)
            token = _choose(logits, sampling, generator)
            generated += 1
            if token in loaded.eos_ids:
                finish = "stop"
                break
            entry = None
            if sampling.top_logprobs is not None:
                entry = _entry(loaded, token, torch.log_softmax(logits, dim=-1), sampling.top_logprobs)
            start = len(text)
            content.append(token)
            text = loaded.tokenizer.decode(content, skip_special_tokens=True)
            state.pending.append((start, len(text), entry))
            cut = stop_at(text, sampling.stop)
            if cut is not None:
                finish = "stop"
                break
            delta = state.release(text, len(text) - _held_back(text, sampling.stop))
            if on_delta is not None and (delta.text or delta.tokens):
                on_delta(delta)
            inputs = torch.tensor([[token]], device=loaded.device)
        last = state.finish(text, cut)
        if on_delta is not None and (last.text or last.tokens):
            on_delta(last)
    return Completion(state.released, finish, tuple(state.tokens), Usage(len(prompt), generated))
