"""AlpacaEval 2's judge, ``weighted_alpaca_eval_gpt4_turbo``, through any OpenAI-compatible chat endpoint.

Everything that decides a verdict is alpaca-eval 0.6.6's, reproduced (tests check each against it):
- the order: a coin seeded with "is_switched_outputs" + instruction + the annotator's seed (0) decides
  whether the model's output is shown first (alpaca-eval's RandomSwitchTwoColumnsProcessor);
- the prompt: its template file, pinned byte for byte in tasks/judges/, filled as its make_prompts fills it
  (each placeholder's first occurrence, in order), stripped and cut into chat messages at <|im_start|> /
  <|im_end|> as its prompt_to_chatml cuts it;
- the decoding: one token, temperature 1, top_p 1, logprobs with the top 5 alternatives (its configs.yaml);
- the verdict: its logprob_parser with numerator "m" and denominators "m", "M", not binarized: the shown
  order's preference is 2 - P(m) / (P(m) + P(M)), from the top alternatives of the one completion token;
  neither token among them, or an answer of other than one token, is no verdict.

The price is computed from the token usage with the per-1000-token prices given (None: not known), where
alpaca-eval multiplies total tokens by a price it looks up by model name.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backend.judged.judges import PROMPTS_DIR, PromptTemplate
from backend.judged.verdicts import Order, Pair, Shown, Verdict
from backend.serving.client import ChatCall, ChatClient, ChatMessage, ChatResult

#: alpaca-eval's name of this judge (its evaluators_configs folder): annotations.json's "annotator".
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
PROMPT_FILE = PROMPTS_DIR / f"{ANNOTATOR}.txt"
PLACEHOLDERS = ("instruction", "output_1", "output_2")
#: Its completions_kwargs, and the top_p its OpenAI helper adds.
DECODING: Mapping[str, Any] = {
    "max_tokens": 1,
    "temperature": 1.0,
    "top_p": 1.0,
    "logprobs": True,
    "top_logprobs": 5,
}
#: The identifier the prompt gives the output shown first, and the identifiers of both.
NUMERATOR_TOKEN = "m"
DENOMINATOR_TOKENS = ("m", "M")
#: alpaca-eval's annotator seed (PairwiseAnnotator's default) and the column name it seeds the coin with.
SEED = 0
_SWITCH_COLUMN = "is_switched_outputs"
_START, _END = "<|im_start|>", "<|im_end|>"


def shown_order(instruction: str, seed: int = SEED) -> Order:
    """The order alpaca-eval shows a pair in: its seeded coin on the instruction."""
    switched = random.Random(_SWITCH_COLUMN + instruction + str(seed)).choices([False, True], k=1)[0]
    return Order.MODEL_FIRST if switched else Order.REFERENCE_FIRST


def fill_prompt(template: str, instruction: str, first: str, second: str) -> str:
    """The template filled as alpaca-eval's make_prompts fills it: the first occurrence of each placeholder
    (in the order they first appear), one after the other, in the text filled so far."""
    values = {"instruction": instruction, "output_1": first, "output_2": second}
    prompt = template
    for name in dict.fromkeys(re.findall(r"{([^ \s]+?)}", template)):
        if name in values:
            prompt = prompt.replace("{" + name + "}", values[name], 1)
    return prompt


def chat_messages(prompt: str) -> tuple[ChatMessage, ...]:
    """A ChatML prompt as chat messages, as alpaca-eval's prompt_to_chatml cuts it (after stripping it)."""
    prompt = prompt.strip()
    if not (prompt.startswith(_START) and prompt.endswith(_END)):
        raise ValueError(f"a ChatML prompt starts with {_START} and ends with {_END}")
    messages = []
    for part in prompt.split(_START)[1:]:
        head, _, rest = part.partition("\n")
        messages.append(ChatMessage(head.strip(), rest.split(_END, 1)[0].strip()))
    return tuple(messages)


def weighted_preference(top_logprobs: Sequence[tuple[str, float]]) -> float | None:
    """logprob_parser's preference in the shown order, from one token's (token, logprob) alternatives:
    2 - P(m) / (P(m) + P(M)); None when neither "m" nor "M" is among them."""
    found = {token: logprob for token, logprob in top_logprobs if token in DENOMINATOR_TOKENS}
    if not found:
        return None
    numerator = found.get(NUMERATOR_TOKEN, -math.inf)
    denominator = _logsumexp([found.get(t, -math.inf) for t in DENOMINATOR_TOKENS])
    return 2.0 - math.exp(numerator - denominator)


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def raw_completion(result: ChatResult) -> str:
    """The answer as alpaca-eval's parser reads a completion (text, logprobs.content), in JSON."""
    content = [
        {
            "token": t.token,
            "logprob": t.logprob,
            "top_logprobs": [{"token": a.token, "logprob": a.logprob} for a in t.top],
        }
        for t in result.tokens
    ]
    usage = result.usage
    return json.dumps(
        {
            "text": result.text,
            "finish_reason": result.finish_reason,
            "logprobs": {"content": content},
            "total_tokens": None if usage is None else usage.prompt_tokens + usage.completion_tokens,
        },
        ensure_ascii=False,
    )


def parse_completion(raw: str) -> float | None:
    """The shown-order preference in a raw completion; None where alpaca-eval finds none (a parse error,
    other than one token, neither identifier among the alternatives)."""
    try:
        content = json.loads(raw)["logprobs"]["content"]
        if not isinstance(content, list) or len(content) != 1:
            return None
        alternatives = [(a["token"], float(a["logprob"])) for a in content[0]["top_logprobs"]]
    except (ValueError, KeyError, TypeError):
        return None
    return weighted_preference(alternatives)


class WeightedAlpacaEvalJudge:
    """AlpacaEval 2's weighted judge over ``client``'s endpoint, served there as ``model``."""

    annotator = ANNOTATOR
    batch_size = 1

    def __init__(
        self,
        client: ChatClient,
        model: str,
        *,
        prompt_file: Path = PROMPT_FILE,
        price_per_1k_input: float | None = None,
        price_per_1k_output: float | None = None,
        seed: int = SEED,
    ) -> None:
        self.client = client
        self.model = model
        self.prompt = PromptTemplate.load(prompt_file, PLACEHOLDERS)
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.seed = seed

    @property
    def identity(self) -> str:
        return f"endpoint:{self.model}"

    @property
    def prompt_hash(self) -> str:
        return self.prompt.sha256

    @property
    def decoding(self) -> Mapping[str, Any]:
        # The seed decides the order, not the decoding: it is in the key through which output is shown first.
        return DECODING

    def orders(self, pair: Pair) -> tuple[Order, ...]:
        return (shown_order(pair.instruction, self.seed),)

    def call(self, shown: Shown) -> ChatCall:
        """The chat completion that judges ``shown``."""
        prompt = fill_prompt(self.prompt.text, shown.instruction, shown.first, shown.second)
        return ChatCall(
            self.model,
            chat_messages(prompt),
            max_tokens=int(DECODING["max_tokens"]),
            temperature=float(DECODING["temperature"]),
            top_p=float(DECODING["top_p"]),
            logprobs=bool(DECODING["logprobs"]),
            top_logprobs=int(DECODING["top_logprobs"]),
        )

    def judge(self, shown: Shown) -> Verdict:
        result = self.client.complete(self.call(shown))
        raw = raw_completion(result)
        return Verdict(parse_completion(raw), raw, self._price(result), result.seconds)

    def judge_batch(self, shown: Sequence[Shown]) -> list[Verdict]:
        return [self.judge(s) for s in shown]

    def _price(self, result: ChatResult) -> float | None:
        if result.usage is None or self.price_per_1k_input is None or self.price_per_1k_output is None:
            return None
        return (
            result.usage.prompt_tokens * self.price_per_1k_input
            + result.usage.completion_tokens * self.price_per_1k_output
        ) / 1000
