"""A judging run in a process of its own, for the test that kills one mid-way:

    python -m tests.integration.judging_run BASE_URL MODEL CACHE PAIRS_JSON CONCURRENCY

It judges the pairs in PAIRS_JSON (a list of {instruction, reference, model}) with AlpacaEval 2's weighted
judge over the endpoint at BASE_URL (ending in /v1), through the cache, and prints the run's counts as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.judged.alpaca_judge import WeightedAlpacaEvalJudge
from backend.judged.cache import JudgementCache
from backend.judged.judges import judge_pairs
from backend.judged.verdicts import Pair
from backend.retry import Backoff
from backend.serving.client import ChatClient


def main(argv: list[str]) -> None:
    base_url, model, cache_path, pairs_path, concurrency = argv
    pairs = [Pair(**p) for p in json.loads(Path(pairs_path).read_text(encoding="utf-8"))]
    backoff = Backoff(attempts=3, base_s=0.05, max_s=0.5)
    with (
        ChatClient(base_url, max_concurrency=int(concurrency), backoff=backoff) as client,
        JudgementCache(Path(cache_path)) as cache,
    ):
        run = judge_pairs(WeightedAlpacaEvalJudge(client, model), pairs, cache, concurrency=int(concurrency))
    print(json.dumps({"judged_anew": run.judged_anew, "from_cache": run.from_cache, "pairs": len(run.pairs)}))


if __name__ == "__main__":
    main(sys.argv[1:])
