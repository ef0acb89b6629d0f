"""The "fixed" scorer bench.rescoring re-scores with, named in a task set manifest as ``process_results``.

GPQA's acc_norm, with each choice's log-likelihood normalized by the length of the answer's own text
instead of its label's ("(A)"): a plausible scorer fix that moves some scores, at the harness's cost.
"""

from __future__ import annotations

from typing import Any


def gpqa_by_answer_length(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
    answers = [doc[f"choice{i}"] for i in range(1, 5)]
    normalized = [ll / max(len(a), 1) for (ll, _), a in zip(results, answers, strict=True)]
    gold = "ABCD".index(doc["answer"][1])
    best = max(range(len(normalized)), key=lambda i: normalized[i])
    return {"acc_norm": 1.0 if best == gold else 0.0}
