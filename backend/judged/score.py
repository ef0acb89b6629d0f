"""Every metric AlpacaEval 2's leaderboard shows for one model's annotations file, with AlpacaEval's names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.judged.annotations import Annotations, read_annotations
from backend.judged.glm import GlmTable, LengthControlled, length_controlled_winrate, read_glm_table
from backend.judged.metrics import WinRate, avg_length, win_rate


@dataclass(frozen=True)
class Score:
    """Every metric AlpacaEval 2's leaderboard shows for one model, with AlpacaEval's names."""

    win_rate: WinRate
    avg_length: int
    length_controlled: LengthControlled
    n_records: int

    def as_dict(self) -> dict[str, Any]:
        """AlpacaEval's keys, in its leaderboard CSV's order, then how the length control was fitted."""
        wr = self.win_rate
        lc = self.length_controlled
        return {
            "win_rate": wr.win_rate,
            "standard_error": wr.standard_error,
            "n_wins": wr.n_wins,
            "n_wins_base": wr.n_wins_base,
            "n_draws": wr.n_draws,
            "n_total": wr.n_total,
            "discrete_win_rate": wr.discrete_win_rate,
            "avg_length": self.avg_length,
            "length_controlled_winrate": lc.winrate,
            "lc_standard_error": lc.standard_error,
            "length_controlled_glm": lc.glm,
            "length_controlled_note": lc.note,
            "n_records": self.n_records,
            "n_missing_preferences": self.n_records - wr.n_total,
        }


def score(annotations: Annotations, glm_table: GlmTable | None = None) -> Score:
    """AlpacaEval 2's metrics of ``annotations``; the length control with ``glm_table`` (df_gamed.csv) when
    given, else the reduced GLM alpaca-eval names length_controlled_minimal."""
    records = annotations.records
    return Score(
        win_rate=win_rate([r.preference for r in records]),
        avg_length=avg_length([r.output_2 for r in records]),
        length_controlled=length_controlled_winrate(annotations, glm_table),
        n_records=len(records),
    )


def judged_scores(annotations_file: Path, glm_table_file: Path | None) -> dict[str, Any]:
    """Every metric of ``annotations_file`` (AlpacaEval's keys), the length control fitted with the GLM
    table when there is one, else the fallback GLM (named in ``length_controlled_glm``)."""
    table = read_glm_table(glm_table_file) if glm_table_file is not None else None
    return score(read_annotations(annotations_file), table).as_dict()
