"""The model endpoint's pure parts: the request parsed at the edge, and how text is released with stops."""

from __future__ import annotations

import json

import pytest

from backend.errors import ChatRequestInvalid
from backend.serving.generation import _held_back, _Text, stop_at
from backend.serving.protocol import Limits, TokenLogprob, TopLogprob, logprobs_content, parse_chat_request
from backend.serving.tokens import _unicode_to_byte

LIMITS = Limits(max_messages=3, max_prompt_chars=20, max_tokens=50)
HELLO = [{"role": "user", "content": "hello"}]


def parse(**body: object) -> object:
    return parse_chat_request(json.dumps({"model": "org/name", "messages": HELLO, **body}).encode(), LIMITS)


def refused(param: str | None, reason: str = "invalid_value", **body: object) -> str:
    with pytest.raises(ChatRequestInvalid) as caught:
        parse(**body)
    assert (caught.value.param, caught.value.reason) == (param, reason)
    return caught.value.message


def test_a_request_with_openais_defaults():
    request = parse()
    assert (request.temperature, request.top_p, request.n, request.stream) == (1.0, 1.0, 1, False)
    assert request.requested_max_tokens is None and request.stop_sequences == ()
    request = parse(max_tokens=5, max_completion_tokens=7, stop="x", unknown_field={"kept": "out"})
    assert request.requested_max_tokens == 7 and request.stop_sequences == ("x",)
    assert parse(stop=["a", "b"]).stop_sequences == ("a", "b")


def test_each_refusal_names_its_field():
    assert "n=1" in refused("n", n=2)
    assert "50" in refused("max_tokens", max_tokens=51)
    refused("max_completion_tokens", max_completion_tokens=51)
    refused("max_tokens", max_tokens=0)
    refused("messages", messages=HELLO * 4)
    refused("messages", messages=[{"role": "user", "content": "x" * 21}])
    refused("messages", messages=[])
    refused("messages.0.role", messages=[{"role": "tool", "content": "x"}])
    refused("messages.0.content", messages=[{"role": "user"}])
    refused("temperature", temperature=-0.1)
    refused("top_p", top_p=0)
    refused("seed", seed=2**63)
    refused("top_logprobs", top_logprobs=21, logprobs=True)
    assert "logprobs" in refused("top_logprobs", top_logprobs=1)
    refused("stop", stop=["a"] * 5)
    refused("stop", stop="")
    refused("presence_penalty", presence_penalty=0.5)
    refused("logit_bias", logit_bias={"1": 5})
    refused("response_format", response_format={"type": "json_object"})
    refused("model", model="")
    assert parse(logprobs=True, top_logprobs=0, response_format={"type": "text"}).top_logprobs == 0


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"text"', b"\xff", b"[" * 10_000])
def test_a_body_that_is_no_json_object_is_invalid_json(body):
    with pytest.raises(ChatRequestInvalid) as caught:
        parse_chat_request(body, LIMITS)
    assert caught.value.reason == "invalid_json" and caught.value.http_status == 400


def test_the_body_limit_follows_the_prompt_limit():
    assert Limits(max_prompt_chars=1000).max_body_bytes == 6000 + 65536


def test_text_waits_while_a_stop_sequence_may_begin_in_it():
    assert _held_back("hello wor", ("world",)) == 3
    assert _held_back("hello w", ("world", "w")) == 1  # "w" itself would have stopped; "w" of "world" waits
    assert _held_back("hello", ("xyz",)) == 0
    assert _held_back("caf\ufffd", ()) == 1  # a character whose bytes are still coming
    assert stop_at("one two three", ("three", "two")) == 4
    assert stop_at("one", ("two",)) is None


def _token(text: str) -> TokenLogprob:
    return TokenLogprob(text, -1.0, text.encode())


def test_tokens_are_released_with_their_text_and_cut_at_a_stop():
    state = _Text()
    text = ""
    for piece in ("Hel", "lo wo", "rld!"):
        start, text = len(text), text + piece
        state.pending.append((start, len(text), _token(piece)))
    # "Hello wo" may begin "world": only "Hello " goes, with the token that ends within it.
    delta = state.release("Hello wo", len("Hello "))
    assert delta.text == "Hello " and [t.token for t in delta.tokens] == ["Hel"]
    last = state.finish("Hello world!", len("Hello w"))
    assert last.text == "w" and [t.token for t in last.tokens] == ["lo wo"]  # "rld!" began after the cut
    assert state.released == "Hello w"


def test_logprobs_json_has_no_infinity():
    entry = TokenLogprob("a", float("-inf"), b"a", (TopLogprob("a", float("-inf"), None),))
    [content] = logprobs_content([entry])
    assert content == {
        "token": "a",
        "logprob": -9999.0,
        "bytes": [97],
        "top_logprobs": [{"token": "a", "logprob": -9999.0, "bytes": None}],
    }
    json.dumps(content, allow_nan=False)


def test_byte_level_characters_map_back_to_their_bytes():
    table = _unicode_to_byte()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert table["Ġ"] == ord(" ") and table["Ċ"] == ord("\n") and table["a"] == ord("a")
