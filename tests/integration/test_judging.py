"""The judges with real parts: AlpacaEval 2's weighted judge against our OpenAI-compatible endpoint over a
real tiny model, PandaLM's judge as a real local model, and a judging run killed with SIGKILL mid-way whose
rerun judges nothing twice and leaves every pair judged.

A tiny random model's answers are noise, so these tests check the mechanics, never the verdicts: the
preferences are what alpaca-eval's parser makes of the logprobs the endpoint gave (or PandaLM's parser of
the text), and the cache holds what was judged."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import JudgeNotLoadable
from backend.hub.local_store import LocalModelStore
from backend.judged.alpaca_judge import (
    PROMPT_FILE,
    WeightedAlpacaEvalJudge,
    chat_messages,
    fill_prompt,
    shown_order,
)
from backend.judged.cache import JudgementCache, JudgeSignature
from backend.judged.judges import judge_pairs
from backend.judged.pandalm import PandaLMJudge
from backend.judged.verdicts import Order, Pair, Shown, combine, preference
from backend.modelbuilder import build_tiny_model
from backend.retry import Backoff
from backend.serving.app import create_serving_app
from backend.serving.client import ChatClient
from backend.serving.models import Catalog, ModelPool
from tests import alpaca_eval_reference
from tests.serving import build_leaning_judge, live, snapshot

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
JUDGE = "judge/tiny"
LEANING = (
    "judge/leaning"  # the tiny model, its output layer edited so that it answers "m" or "M" half the time
)
FAST = Backoff(attempts=3, base_s=0.01, max_s=0.5)
PAIRS = [
    Pair("Name a colour.", "Red.", "The sky is blue, so blue."),
    Pair("What is 2 + 2?", "4", "Four, because two and two make four."),
    Pair("Write a haiku about the sea.", "Waves fold on the shore", "The sea is big."),
    Pair("If a train leaves at nine, when does it arrive?", "At ten.", "It depends on the speed."),
    Pair("Say hello.", "Hello!", "Hi."),
    Pair("List three fruits.", "Apple, pear, plum.", "Bananas."),
]


class Recorder:
    """Our endpoint, recording each chat completion it answered by its last message (the judge's prompt),
    and waiting ``delay_s`` before each: a slower judge, so that a run can be killed part-way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.delay_s = 0.0
        self.prompts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.prompts.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def tapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await self.app(scope, tapped, send)
        with self._lock:
            self.prompts[json.loads(body)["messages"][-1]["content"]] += 1


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalModelStore:
    models = LocalModelStore(tmp_path_factory.mktemp("judge-store"))
    build_tiny_model(models, JUDGE)
    build_leaning_judge(models, tmp_path_factory.mktemp("leaning"), LEANING)
    return models


@pytest.fixture(scope="module")
def server(store: LocalModelStore) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(create_serving_app(Catalog(store), ModelPool(store, max_loaded=1, device="cpu")))
    with live(recorder) as base:
        yield f"{base}/v1", recorder


@pytest.fixture(scope="module")
def alpaca_eval():
    return alpaca_eval_reference.import_alpaca_eval()


def _user_prompt(shown: Shown) -> str:
    template = PROMPT_FILE.read_text(encoding="utf-8")
    return chat_messages(fill_prompt(template, shown.instruction, shown.first, shown.second))[-1].content


# ------------------------------------------------------------------------------ the weighted endpoint judge


def test_the_weighted_judge_over_the_real_endpoint(server, alpaca_eval, tmp_path):
    url, recorder = server
    before = recorder.total
    parser = alpaca_eval.completion_parsers.logprob_parser
    with (
        ChatClient(url, backoff=FAST, max_concurrency=3) as client,
        JudgementCache(tmp_path / "judgements.sqlite") as cache,
    ):
        judge = WeightedAlpacaEvalJudge(client, LEANING, price_per_1k_input=0.01, price_per_1k_output=0.03)
        run = judge_pairs(judge, PAIRS, cache, concurrency=3)
        assert (run.judged_anew, run.from_cache) == (len(PAIRS), 0)
        assert recorder.total - before == len(PAIRS)
        for judged in run.pairs:
            (order,) = judged.orders
            assert order is shown_order(judged.pair.instruction)
            assert recorder.prompts[_user_prompt(Shown.of(judged.pair, order))] >= 1  # shown in that order
            assert isinstance(judged.raw_completion, str)
            raw = json.loads(judged.raw_completion)
            (token,) = raw["logprobs"]["content"]  # one completion token, five alternatives
            assert len(token["top_logprobs"]) == 5
            (theirs,) = parser(raw, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)
            shown = judged.verdicts[0].preference
            assert shown is None if math.isnan(theirs) else shown == pytest.approx(theirs, abs=1e-12)
            assert judged.preference == preference(shown, order)
            assert judged.preference is None or 1.0 <= judged.preference <= 2.0
            assert judged.price_per_example == pytest.approx(((raw["total_tokens"] - 1) * 0.01 + 0.03) / 1000)
            assert judged.time_per_example > 0
        shown_preferences = [j.verdicts[0].preference for j in run.pairs]
        assert None in shown_preferences
        assert any(p is not None and 1 < p < 2 for p in shown_preferences), shown_preferences
        assert {j.orders for j in run.pairs} == {(Order.REFERENCE_FIRST,), (Order.MODEL_FIRST,)}
        again = judge_pairs(judge, PAIRS, cache, concurrency=3)
    assert (again.judged_anew, again.from_cache) == (0, len(PAIRS))
    assert recorder.total - before == len(PAIRS)  # the rerun asked the endpoint nothing
    assert again.pairs == run.pairs


# ---------------------------------------------------------------------------------------- PandaLM, local


def test_pandalm_judges_both_orders_with_a_local_model(store, tmp_path):
    folder = snapshot(store, JUDGE)
    sha = store.resolve(JUDGE, "main").sha
    judge = PandaLMJudge(folder, revision=sha, repo_id=JUDGE, max_new_tokens=6, batch_size=4)
    assert judge.identity == f"{JUDGE}@{sha}"
    pairs = PAIRS[:3]
    with JudgementCache(tmp_path / "judgements.sqlite") as cache:
        run = judge_pairs(judge, pairs, cache)
        signature = JudgeSignature.of(judge.identity, judge.prompt_hash, judge.decoding)
        assert run.judged_anew == 2 * len(pairs) and cache.count(signature) == 2 * len(pairs)
        for judged in run.pairs:
            assert judged.orders == (Order.REFERENCE_FIRST, Order.MODEL_FIRST)
            assert set(judged.raw_completion) == {"reference_first", "model_first"}
            assert judged.preference == combine(list(zip(judged.orders, judged.verdicts, strict=True)))
            assert judged.price_per_example is None and judged.time_per_example > 0
            for order, verdict in zip(judged.orders, judged.verdicts, strict=True):
                assert cache.get(signature, Shown.of(judged.pair, order)) == verdict
        assert judge_pairs(judge, pairs, cache).from_cache == 2 * len(pairs)
    # Generated together (left-padded) or one at a time, the answers are the same.
    alone = PandaLMJudge(folder, revision=sha, repo_id=JUDGE, max_new_tokens=6, batch_size=1)
    for judged in run.pairs:
        for order, verdict in zip(judged.orders, judged.verdicts, strict=True):
            (single,) = alone.judge_batch([Shown.of(judged.pair, order)])
            assert single.raw_completion == verdict.raw_completion


def test_a_judge_model_that_cannot_be_loaded_says_why(store):
    build_tiny_model(store, "judge/remote-code", remote_code=True)
    build_tiny_model(store, "judge/pickles", safetensors=False)
    sha = store.resolve(JUDGE, "main").sha
    with pytest.raises(JudgeNotLoadable, match="full commit sha"):
        PandaLMJudge(snapshot(store, JUDGE), revision="main", repo_id=JUDGE)
    for repo, reason in [("judge/remote-code", "custom code"), ("judge/pickles", "no safetensors")]:
        with pytest.raises(JudgeNotLoadable, match=reason):
            PandaLMJudge(snapshot(store, repo), revision=sha, repo_id=repo)
    with pytest.raises(JudgeNotLoadable, match="not in the Hugging Face cache"):
        PandaLMJudge.from_hub_cache("WeOpenML/PandaLM-7B-v1", sha)


# ------------------------------------------------------------------------------ killed mid-way, rerun


def _run(url: str, cache: Path, pairs: Path, concurrency: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.judging_run",
            url,
            JUDGE,
            str(cache),
            str(pairs),
            str(concurrency),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_killed_mid_way_then_rerun_judges_no_ordering_twice(server, tmp_path):
    url, recorder = server
    pairs = [Pair(f"Question {i}: name a number.", f"{i}", f"{i + 1}, I think") for i in range(12)]
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps([vars(p) for p in pairs]), encoding="utf-8")
    prompts = {_user_prompt(Shown.of(p, shown_order(p.instruction))): p for p in pairs}
    assert len(prompts) == len(pairs)
    cache_path = tmp_path / "judgements.sqlite"
    concurrency = 2
    recorder.delay_s = 0.15
    try:
        with JudgementCache(cache_path) as cache:
            first = _run(url, cache_path, pairs_file, concurrency)
            deadline = time.monotonic() + 60
            while cache.count() < 3:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the run judged nothing"
                time.sleep(0.01)
            os.kill(first.pid, signal.SIGKILL)
            first.communicate(timeout=30)
            assert first.returncode == -signal.SIGKILL
            stored = cache.count()
            assert 3 <= stored < len(pairs), "killed too late to test anything"
            judged_before = {p: n for p, n in recorder.prompts.items() if p in prompts}
            finished = {
                prompt
                for prompt, pair in prompts.items()
                if cache.get(
                    JudgeSignature.of(f"endpoint:{JUDGE}", _prompt_hash(), _decoding()),
                    Shown.of(pair, shown_order(pair.instruction)),
                )
                is not None
            }
            assert len(finished) == stored

            second = _run(url, cache_path, pairs_file, concurrency)
            out, err = second.communicate(timeout=120)
            assert second.returncode == 0, err
            counts = json.loads(out)
            assert counts == {"judged_anew": len(pairs) - stored, "from_cache": stored, "pairs": len(pairs)}
            assert cache.count() == len(pairs)  # every pair ends judged
    finally:
        recorder.delay_s = 0.0
    asked = {p: recorder.prompts[p] for p in prompts}
    assert all(asked[p] == 1 for p in finished)  # nothing that finished before the kill was asked again
    # What was under way at the kill (at most `concurrency` orderings) may have reached the endpoint twice.
    twice = [p for p, n in asked.items() if n > 1]
    assert len(twice) <= concurrency and all(asked[p] == 2 for p in twice)
    assert all(judged_before.get(p, 0) >= 1 for p in twice)
    assert all(n >= 1 for n in asked.values())


def _prompt_hash() -> str:
    import hashlib

    return hashlib.sha256(PROMPT_FILE.read_bytes()).hexdigest()


def _decoding() -> dict[str, object]:
    from backend.judged.alpaca_judge import DECODING

    return dict(DECODING)
