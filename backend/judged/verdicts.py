"""A judge's verdicts: one per order the two outputs were shown in, and the preference they add up to.

A judge sees the reference output and the model's output in some order and prefers the one shown first or
the one shown second. Its verdict is recorded in that shown order (1: the first shown is better, 2: the
second, 1.5: a tie) because that is what the judge said, and what the cache keys on; ``preference`` turns
it into AlpacaEval's convention, where output_1 is the reference and output_2 the evaluated model.

A judge shown both orders (PandaLM) gives two verdicts; ``combine`` averages their preferences, which is the
PandaLM maintainers' rule where they spoke (the same winner both times wins; a verdict that flips with the
order, or two ties, counts as a tie) and says the natural thing where they did not: a tie in one order and
a win in the other is a quarter step towards that winner (1.25 or 1.75), a lean that alpaca-eval's metrics
count as 0.25 or 0.75 of a win and as a win of that side in n_wins / n_wins_base. An order without a
verdict (an answer the parser cannot read) leaves the pair without one: half an answer is not one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: A shown-order preference: the first shown output is better.
FIRST = 1.0
#: A shown-order preference: the second shown output is better.
SECOND = 2.0
#: A shown-order (or AlpacaEval) preference: neither is better.
TIE = 1.5


class Order(enum.Enum):
    """Which output the judge is shown first."""

    REFERENCE_FIRST = "reference_first"  # output_1 (the reference) first: AlpacaEval's unswitched order
    MODEL_FIRST = "model_first"  # output_2 (the evaluated model) first: AlpacaEval's switched order


@dataclass(frozen=True)
class Pair:
    """One instruction, the reference model's output and the evaluated model's output."""

    instruction: str
    reference: str  # output_1
    model: str  # output_2


@dataclass(frozen=True)
class Shown:
    """What a judge is shown: an instruction and two outputs, in the order it sees them."""

    instruction: str
    first: str
    second: str

    @classmethod
    def of(cls, pair: Pair, order: Order) -> Shown:
        if order is Order.REFERENCE_FIRST:
            return cls(pair.instruction, pair.reference, pair.model)
        return cls(pair.instruction, pair.model, pair.reference)


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for one shown order."""

    preference: float | None  # in [1, 2] in the shown order; None: the answer held no verdict
    raw_completion: str  # the judge's answer as it came (an endpoint judge's: JSON with its logprobs)
    price: float | None  # what the call cost, None when not known
    seconds: float  # how long the judgement took

    def __post_init__(self) -> None:
        if self.preference is not None and not 1.0 <= self.preference <= 2.0:
            raise ValueError(f"a shown-order preference is in [1, 2], not {self.preference}")
        if self.price is not None and not (math.isfinite(self.price) and self.price >= 0):
            raise ValueError(f"a price is a finite number >= 0, not {self.price}")
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"seconds is a finite number >= 0, not {self.seconds}")


def preference(shown_preference: float | None, order: Order) -> float | None:
    """A shown-order preference in AlpacaEval's convention (1: the reference better, 2: the model)."""
    if shown_preference is None:
        return None
    return shown_preference if order is Order.REFERENCE_FIRST else 3.0 - shown_preference


def combine(verdicts: Sequence[tuple[Order, Verdict]]) -> float | None:
    """The pair's AlpacaEval preference from its verdicts: their mean, None if any order has no verdict."""
    if not verdicts:
        return None
    values = [preference(v.preference, order) for order, v in verdicts]
    if any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None) / len(values)
