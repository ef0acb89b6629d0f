"""Static battles: two stored answers to one instruction of a judged leaderboard, so people can vote with no
serving cost.

The answers are those the judged leaderboard already holds: each evaluated model's answer (its annotations
file, where the judge read it) and the reference model's (the same file's other output). A model's name is its
request's ``ORG/NAME``, the reference's its generator name, as in the judged table. The pool is rebuilt when
the judged leaderboard's results change (its table's stamp), and never reads a file twice for one stamp.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import AnnotationsInvalid
from backend.judged.annotations import read_annotations
from backend.services.leaderboard import LeaderboardService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaticQuestion:
    key: str  # "<judged leaderboard>:<hash of the instruction>", stored with the battle
    instruction: str
    answers: dict[str, str]  # model -> its answer


@dataclass(frozen=True)
class StaticPool:
    questions: tuple[StaticQuestion, ...]

    @property
    def models(self) -> list[str]:
        return sorted({m for q in self.questions for m in q.answers})

    def shared(self, model_a: str, model_b: str) -> list[StaticQuestion]:
        """The questions both models answered."""
        return [q for q in self.questions if model_a in q.answers and model_b in q.answers]


class StaticAnswers:
    """The static pool of one judged leaderboard, as its table holds it now."""

    def __init__(self, board: LeaderboardService[Any]) -> None:
        self.board = board
        self._pool: tuple[Any, StaticPool] | None = None
        self._lock = threading.Lock()

    @property
    def leaderboard(self) -> str:
        return str(self.board.config.name)

    def pool(self) -> StaticPool:
        table = self.board.table()
        held = self._pool
        if held is not None and held[0] == table.stamp:
            return held[1]
        with self._lock:
            held = self._pool
            if held is None or held[0] != table.stamp:
                held = (table.stamp, self._build(table.latest.values()))
                self._pool = held
        return held[1]

    def _build(self, latest: Any) -> StaticPool:
        newest: dict[str, Any] = {}  # model -> (request id, annotations path): its newest request's
        for evaluation, request in latest:
            path = evaluation.provenance.get("annotations_file")
            if isinstance(path, str) and request.id >= newest.get(request.model, (-1, ""))[0]:
                newest[request.model] = (request.id, path)
        by_text: dict[str, dict[str, str]] = {}
        for model, (_, path) in sorted(newest.items()):
            try:
                records = read_annotations(Path(path), f"{model}'s annotations").records
            except AnnotationsInvalid as exc:
                log.warning("static battles: %s left out: %s", model, exc.message)
                continue
            for record in records:
                answers = by_text.setdefault(record.instruction, {})
                answers.setdefault(model, record.output_2)
                answers.setdefault(record.generator_1, record.output_1)
        questions = tuple(
            StaticQuestion(key=f"{self.leaderboard}:{_digest(text)}", instruction=text, answers=answers)
            for text, answers in by_text.items()
        )
        return StaticPool(questions)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
