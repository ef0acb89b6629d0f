"""The judgement cache and judge_pairs: a key changes with each of its six parts, judgements outlive the
process, several writers share a file, what is read back is checked, and a run judges only what the cache
lacks (once per ordering), stores what finished when a batch fails, and combines orders per pair."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backend.errors import JudgementCacheInvalid
from backend.judged.cache import JudgementCache, JudgeSignature, canonical_json
from backend.judged.judges import judge_pairs
from backend.judged.verdicts import Order, Pair, Shown, Verdict

REPO = Path(__file__).resolve().parents[2]
SIGNATURE = JudgeSignature.of("endpoint:judge", "a" * 64, {"max_tokens": 1, "temperature": 1.0})
SHOWN = Shown("Name a colour.", "Red.", "Blue.")
VERDICT = Verdict(1.25, '{"text": "m"}', 0.002, 0.5)


@pytest.fixture
def cache(tmp_path: Path):
    with JudgementCache(tmp_path / "judgements.sqlite") as opened:
        yield opened


def test_a_judgement_is_stored_and_read_back(cache):
    assert cache.get(SIGNATURE, SHOWN) is None
    assert cache.put(SIGNATURE, SHOWN, VERDICT)
    assert cache.get(SIGNATURE, SHOWN) == VERDICT
    no_verdict = Shown("Name a colour.", "Red.", "Green.")
    cache.put(SIGNATURE, no_verdict, Verdict(None, "???", None, 0.0))
    assert cache.get(SIGNATURE, no_verdict) == Verdict(None, "???", None, 0.0)
    assert cache.count() == 2 and cache.count(SIGNATURE) == 2


def test_changing_any_part_of_the_key_misses_the_cache(cache):
    cache.put(SIGNATURE, SHOWN, VERDICT)
    others = [
        (SIGNATURE, replace(SHOWN, instruction="Name a colour!")),
        (SIGNATURE, replace(SHOWN, first="Red")),
        (SIGNATURE, replace(SHOWN, second="Blue")),
        (SIGNATURE, Shown(SHOWN.instruction, SHOWN.second, SHOWN.first)),  # the other order
        (replace(SIGNATURE, identity="endpoint:other"), SHOWN),
        (replace(SIGNATURE, prompt_hash="b" * 64), SHOWN),
        (JudgeSignature.of("endpoint:judge", "a" * 64, {"max_tokens": 2, "temperature": 1.0}), SHOWN),
        (JudgeSignature.of("endpoint:judge", "a" * 64, {"max_tokens": 1}), SHOWN),
    ]
    keys = {signature.key(shown) for signature, shown in others}
    assert len(keys) == len(others) and SIGNATURE.key(SHOWN) not in keys
    for signature, shown in others:
        assert cache.get(signature, shown) is None
    # the decoding's spelling does not matter, its values do
    same = JudgeSignature.of("endpoint:judge", "a" * 64, {"temperature": 1.0, "max_tokens": 1})
    assert cache.get(same, SHOWN) == VERDICT


def test_parts_cannot_run_into_each_other():
    """("ab", "c") and ("a", "bc") are different keys: the parts are JSON fields, not a concatenation."""
    assert SIGNATURE.key(Shown("i", "ab", "c")) != SIGNATURE.key(Shown("i", "a", "bc"))
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'


def test_judgements_outlive_the_connection_and_the_first_stored_stands(tmp_path):
    path = tmp_path / "deep" / "folder" / "judgements.sqlite"
    with JudgementCache(path) as first:
        assert first.put(SIGNATURE, SHOWN, VERDICT)
    with JudgementCache(path) as again:
        assert not again.put(SIGNATURE, SHOWN, replace(VERDICT, preference=2.0))
        assert again.get(SIGNATURE, SHOWN) == VERDICT


_WRITER = """
import sys
from pathlib import Path
from backend.judged.cache import JudgementCache, JudgeSignature
from backend.judged.verdicts import Shown, Verdict
signature = JudgeSignature.of("local/judge@" + "0" * 40, "h", {"max_new_tokens": 4})
with JudgementCache(Path(sys.argv[1]), busy_timeout_s=30) as cache:
    for i in range(40):
        cache.put(signature, Shown(f"instruction {i}", sys.argv[2], "other"), Verdict(1.5, sys.argv[2], None, 0.1))
"""


def test_several_processes_write_one_file(tmp_path):
    path = tmp_path / "judgements.sqlite"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), f"writer {n}"], env={"PYTHONPATH": str(REPO)}
        )
        for n in range(4)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
    with JudgementCache(path) as cache:
        assert cache.count() == 160


def _corrupt(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql)
    db.close()


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE judgements SET preference = 2.5", "preference 2.5"),
        ("UPDATE judgements SET preference = 'two'", "preference 'two'"),
        ("UPDATE judgements SET price = -1", "price -1"),
        ("UPDATE judgements SET seconds = 'soon'", "duration 'soon'"),
        ("UPDATE judgements SET raw_completion = x'00'", "raw completion"),
        ("UPDATE judgements SET judge = 'endpoint:someone-else'", "another judge"),
    ],
)
def test_a_row_that_fails_its_checks_is_refused_with_the_fix(tmp_path, sql, problem):
    path = tmp_path / "judgements.sqlite"
    with JudgementCache(path) as cache:
        cache.put(SIGNATURE, SHOWN, VERDICT)
    _corrupt(path, sql)
    with JudgementCache(path) as cache, pytest.raises(JudgementCacheInvalid) as caught:
        cache.get(SIGNATURE, SHOWN)
    assert problem in caught.value.message
    assert f"DELETE FROM judgements WHERE key = '{SIGNATURE.key(SHOWN)}'" in caught.value.message


def test_a_file_that_is_not_a_cache_is_refused(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(JudgementCacheInvalid, match="not a judgement cache"):
        JudgementCache(text)
    newer = tmp_path / "newer.sqlite"
    _corrupt(newer, "PRAGMA user_version = 7")
    with pytest.raises(JudgementCacheInvalid, match="schema is version 7"):
        JudgementCache(newer)


# ---------------------------------------------------------------------------------------- judge_pairs


class LengthJudge:
    """A small honest judge: the longer output wins, equal lengths tie, an empty instruction is no verdict.
    It counts what it is asked; ``fail_on`` makes it fail on that instruction (an endpoint that gave up)."""

    annotator = "length"
    prompt_hash = "p" * 64

    def __init__(self, both_orders: bool = False, batch_size: int = 1, fail_on: str | None = None) -> None:
        self.both_orders = both_orders
        self.batch_size = batch_size
        self.fail_on = fail_on
        self.asked: list[Shown] = []
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return "local/length@" + "1" * 40

    @property
    def decoding(self) -> Mapping[str, Any]:
        return {"max_new_tokens": 1}

    def orders(self, pair: Pair) -> tuple[Order, ...]:
        if self.both_orders:
            return (Order.REFERENCE_FIRST, Order.MODEL_FIRST)
        return (Order.MODEL_FIRST if len(pair.instruction) % 2 else Order.REFERENCE_FIRST,)

    def judge_batch(self, shown: Sequence[Shown]) -> list[Verdict]:
        with self._lock:
            self.asked.extend(shown)
        if any(s.instruction == self.fail_on for s in shown):
            raise RuntimeError("the endpoint gave up")
        verdicts = []
        for s in shown:
            if not s.instruction:
                verdicts.append(Verdict(None, "no idea", None, 0.1))
                continue
            p = 1.5 if len(s.first) == len(s.second) else (1.0 if len(s.first) > len(s.second) else 2.0)
            verdicts.append(Verdict(p, f"{p}", 0.01, 0.1))
        return verdicts


PAIRS = [
    Pair("one", "a long reference", "short"),
    Pair("three", "ref", "a longer model answer"),
    Pair("equal", "abc", "xyz"),
    Pair("", "a", "bb"),
    Pair("one", "a long reference", "short"),  # the same pair again: judged once
]


def test_a_run_judges_what_is_missing_and_a_rerun_nothing(cache):
    judge = LengthJudge()
    run = judge_pairs(judge, PAIRS, cache, concurrency=3)
    assert (run.judged_anew, run.from_cache, len(judge.asked)) == (4, 0, 4)
    assert [p.preference for p in run.pairs] == [1.0, 2.0, 1.5, None, 1.0]
    assert [p.orders for p in run.pairs][:2] == [(Order.MODEL_FIRST,), (Order.MODEL_FIRST,)]
    assert run.pairs[1].raw_completion == "1.0"  # the model shown first and longer: 1 in the shown order
    assert run.pairs[0].price_per_example == 0.01 and run.pairs[3].price_per_example is None
    assert run.pairs[0].time_per_example == pytest.approx(0.1)
    again = judge_pairs(judge, [*PAIRS, Pair("new", "x", "y")], cache, concurrency=3)
    assert (again.judged_anew, again.from_cache, len(judge.asked)) == (1, 4, 5)
    assert [p.preference for p in again.pairs][:5] == [p.preference for p in run.pairs]


def test_both_orders_are_judged_cached_and_combined(cache):
    judge = LengthJudge(both_orders=True, batch_size=3)
    progress: list[tuple[int, int]] = []
    run = judge_pairs(judge, PAIRS[:4], cache, on_judged=lambda done, total: progress.append((done, total)))
    assert run.judged_anew == 8 and cache.count() == 8
    assert progress == [(3, 8), (6, 8), (8, 8)]
    assert [p.preference for p in run.pairs] == [1.0, 2.0, 1.5, None]
    assert run.pairs[0].raw_completion == {"reference_first": "1.0", "model_first": "2.0"}
    assert run.pairs[0].price_per_example == pytest.approx(0.02)
    assert run.pairs[0].time_per_example == pytest.approx(0.2)


def test_a_failed_batch_keeps_what_finished_and_a_rerun_judges_the_rest(cache):
    pairs = [Pair(f"instruction {i}", "r" * i, "m" * (10 - i)) for i in range(10)]
    failing = LengthJudge(fail_on="instruction 6")
    with pytest.raises(RuntimeError, match="gave up"):
        judge_pairs(failing, pairs, cache, concurrency=1)
    assert len(failing.asked) == 7 and cache.count() == 6  # nothing started after the failure
    judge = LengthJudge()
    run = judge_pairs(judge, pairs, cache, concurrency=2)
    assert (run.judged_anew, run.from_cache) == (4, 6)
    assert {s.instruction for s in judge.asked} == {f"instruction {i}" for i in range(6, 10)}
    assert all(p.preference is not None for p in run.pairs)


def test_a_judge_that_answers_the_wrong_number_of_verdicts_is_an_error(cache):
    class Short(LengthJudge):
        def judge_batch(self, shown: Sequence[Shown]) -> list[Verdict]:
            return super().judge_batch(shown)[:-1]

    with pytest.raises(RuntimeError, match="gave 1 verdicts for 2"):
        judge_pairs(Short(batch_size=2), PAIRS[:2], cache)
    assert cache.count() == 0
