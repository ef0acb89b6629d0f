"""Judging pairs of outputs: what a judge is, its prompt template, and the run that judges what is not cached.

A judge (the ``Judge`` protocol) names itself for the cache (identity, prompt hash, decoding), says which
orders it wants a pair shown in (AlpacaEval's weighted judge: one, chosen by a seeded coin; PandaLM: both)
and judges a batch of shown pairs. ``judge_pairs`` looks every ordering up in the cache, judges the missing
ones ``concurrency`` batches at a time, writes each verdict to the cache the moment its batch returns (so a
killed run loses only what was under way) and gives each pair its preference in AlpacaEval's convention
with the price, time and raw completion annotations.json records carry.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import backend
from backend.errors import JudgePromptInvalid
from backend.judged.cache import JudgementCache, JudgeSignature
from backend.judged.verdicts import Order, Pair, Shown, Verdict, combine

log = logging.getLogger(__name__)

#: The prompt templates of the judges, pinned data (tests check them against their sources).
PROMPTS_DIR = Path(backend.__file__).resolve().parents[1] / "tasks" / "judges"


@dataclass(frozen=True)
class PromptTemplate:
    """A judge's prompt template file: its text and the sha256 of its bytes (part of every cache key)."""

    path: Path
    text: str
    sha256: str

    @classmethod
    def load(cls, path: Path, placeholders: Sequence[str]) -> PromptTemplate:
        """The template at ``path``, refused unless it holds each ``{placeholder}``."""
        try:
            data = Path(path).read_bytes()
            text = data.decode("utf-8")
        except OSError as exc:
            raise JudgePromptInvalid(f"the prompt template {path} cannot be read ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise JudgePromptInvalid(f"the prompt template {path} is not UTF-8 text") from exc
        missing = [name for name in placeholders if "{" + name + "}" not in text]
        if missing:
            raise JudgePromptInvalid(
                f"the prompt template {path} has no {', '.join('{' + m + '}' for m in missing)}: restore it "
                "from the repository"
            )
        return cls(Path(path), text, hashlib.sha256(data).hexdigest())

    def fill(self, values: Mapping[str, str]) -> str:
        """The template with each ``{name}`` of ``values`` replaced, in one pass (a value that holds a
        placeholder stays as it is)."""
        pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
        return pattern.sub(lambda m: values[m.group(0)[1:-1]], self.text)


class Judge(Protocol):
    """What judge_pairs needs of a judge."""

    @property
    def identity(self) -> str:
        """Its name in cache keys: "<repo>@<revision>" for a local judge, "endpoint:<model>" for another."""
        ...

    @property
    def prompt_hash(self) -> str:
        """sha256 of its prompt template file."""
        ...

    @property
    def decoding(self) -> Mapping[str, Any]:
        """Its decoding settings (max tokens, temperature, logprobs...), JSON values."""
        ...

    @property
    def annotator(self) -> str:
        """The name annotations.json records give it (alpaca-eval's config name for its judges)."""
        ...

    @property
    def batch_size(self) -> int:
        """How many shown pairs one judge_batch call takes."""
        ...

    def orders(self, pair: Pair) -> tuple[Order, ...]:
        """The orders ``pair`` is shown in: each is one judgement."""
        ...

    def judge_batch(self, shown: Sequence[Shown]) -> list[Verdict]:
        """A verdict for each shown pair, in order."""
        ...


@dataclass(frozen=True)
class JudgedPair:
    """One pair's judgement, as annotations.json records it."""

    pair: Pair
    orders: tuple[Order, ...]  # the orders it was shown in (AlpacaEval: is_switched_outputs = MODEL_FIRST)
    verdicts: tuple[Verdict, ...]  # one per order
    preference: float | None  # AlpacaEval's convention: 1 the reference better, 2 the model, 1.5 a tie
    price_per_example: float | None  # the sum over its orders; None when one of them is not known
    time_per_example: float  # seconds, the sum over its orders (as first judged, when from the cache)

    @property
    def raw_completion(self) -> str | dict[str, str]:
        """The judge's raw answer; for a pair shown in several orders, by order ("reference_first"...)."""
        if len(self.verdicts) == 1:
            return self.verdicts[0].raw_completion
        return {order.value: v.raw_completion for order, v in zip(self.orders, self.verdicts, strict=True)}


@dataclass(frozen=True)
class JudgingRun:
    """The pairs judged, in the order given, and where their judgements came from (distinct orderings)."""

    pairs: tuple[JudgedPair, ...]
    judged_anew: int  # orderings the judge was asked about in this run
    from_cache: int  # orderings found in the cache


def judge_pairs(
    judge: Judge,
    pairs: Sequence[Pair],
    cache: JudgementCache,
    *,
    concurrency: int = 1,
    on_judged: Callable[[int, int], None] | None = None,
) -> JudgingRun:
    """Judge every ordering of ``pairs`` the cache does not hold, ``concurrency`` batches at a time.

    An ordering that occurs several times (the same instruction and outputs) is judged once. When a batch
    fails, no new batch starts; those under way are finished and stored, then the first failure is raised:
    running again judges only what is left. ``on_judged(done, total)`` is called after each batch.
    """
    if concurrency < 1:
        raise ValueError("concurrency is at least 1")
    signature = JudgeSignature.of(judge.identity, judge.prompt_hash, judge.decoding)
    plan: list[tuple[Pair, tuple[Order, ...], list[str]]] = []
    verdicts: dict[str, Verdict] = {}
    missing: dict[str, Shown] = {}
    for pair in pairs:
        orders = judge.orders(pair)
        keys = []
        for order in orders:
            shown = Shown.of(pair, order)
            key = signature.key(shown)
            keys.append(key)
            if key in verdicts or key in missing:
                continue
            stored = cache.get(signature, shown)
            if stored is None:
                missing[key] = shown
            else:
                verdicts[key] = stored
        plan.append((pair, orders, keys))
    from_cache = len(verdicts)
    if missing:
        _judge_missing(judge, signature, cache, missing, verdicts, concurrency, on_judged)
    log.info(
        "judged pairs",
        extra={"judge": judge.identity, "pairs": len(pairs), "judged": len(missing), "cached": from_cache},
    )
    judged = tuple(_judged_pair(pair, orders, [verdicts[k] for k in keys]) for pair, orders, keys in plan)
    return JudgingRun(judged, judged_anew=len(missing), from_cache=from_cache)


def _judge_missing(
    judge: Judge,
    signature: JudgeSignature,
    cache: JudgementCache,
    missing: dict[str, Shown],
    verdicts: dict[str, Verdict],
    concurrency: int,
    on_judged: Callable[[int, int], None] | None,
) -> None:
    items = list(missing.items())
    size = max(1, judge.batch_size)
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    failure: BaseException | None = None
    finished = 0
    with ThreadPoolExecutor(max_workers=min(concurrency, len(batches))) as pool:
        pending: dict[Future[list[Verdict]], list[tuple[str, Shown]]] = {}
        queue = iter(batches)
        while True:
            while failure is None and len(pending) < concurrency:
                batch = next(queue, None)
                if batch is None:
                    break
                pending[pool.submit(judge.judge_batch, [shown for _, shown in batch])] = batch
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                batch = pending.pop(future)
                error = future.exception()
                if error is not None:
                    failure = failure or error
                    continue
                answers = future.result()
                if len(answers) != len(batch):
                    failure = failure or RuntimeError(
                        f"{judge.identity} gave {len(answers)} verdicts for {len(batch)} shown pairs"
                    )
                    continue
                for (key, shown), verdict in zip(batch, answers, strict=True):
                    if not cache.put(signature, shown, verdict):  # another run stored it first: that one
                        verdict = cache.get(signature, shown) or verdict
                    verdicts[key] = verdict
                finished += len(batch)
                if on_judged is not None:
                    on_judged(finished, len(missing))
    if failure is not None:
        raise failure


def _judged_pair(pair: Pair, orders: tuple[Order, ...], verdicts: list[Verdict]) -> JudgedPair:
    prices = [v.price for v in verdicts]
    return JudgedPair(
        pair=pair,
        orders=orders,
        verdicts=tuple(verdicts),
        preference=combine(list(zip(orders, verdicts, strict=True))),
        price_per_example=None if any(p is None for p in prices) else sum(p for p in prices if p is not None),
        time_per_example=sum(v.seconds for v in verdicts),
    )
