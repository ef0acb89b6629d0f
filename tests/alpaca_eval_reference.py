"""alpaca-eval 0.6.6 itself, the reference the judged metrics are checked against (a dev dependency only).

Its own entry point, ``alpaca_eval.main.evaluate``, is run on annotations we give it: the annotator is a
stand-in that returns them (the verdicts are the input here, not something to compute), and everything
after that is alpaca-eval's code: ``avg_length`` as evaluate stores it, get_winrate, and
get_length_controlled_winrate with its GLM. Its GLM downloads df_gamed.csv from the Hub inside the function;
offline, the download is pointed at a table the test wrote.

Two things alpaca-eval does to the process it runs in are undone: importing it sets the root logger to
INFO, and its GLM turns on scikit-learn's metadata routing globally (here inside a config context).
alpaca-eval 0.6.6 imports ``pkg_resources`` at the top of its utils, which setuptools >= 81 no longer ships;
it uses it only to compare package versions in API decoders, never in the metrics, so an empty module stands
in for the import (an attribute read from it would fail loudly).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pandas as pd


def import_alpaca_eval() -> ModuleType:
    root = logging.getLogger()
    level = root.level
    shimmed = importlib.util.find_spec("pkg_resources") is None
    if shimmed:
        sys.modules["pkg_resources"] = types.ModuleType("pkg_resources")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its imports' deprecations are not ours to fix
            import alpaca_eval.main
            import alpaca_eval.metrics.glm_winrate
    finally:
        if shimmed:
            del sys.modules["pkg_resources"]
        root.setLevel(level)
    return alpaca_eval


class _GivenVerdicts:
    """The annotator evaluate() calls: it returns the annotations the test gives it."""

    records: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def annotate_head2head(self, outputs_1: Any, outputs_2: Any, **_: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]


def evaluate(
    alpaca_eval: ModuleType,
    records: list[dict[str, Any]],
    glm_name: str | None = None,
    table: Path | None = None,
) -> dict[str, Any]:
    """The leaderboard row alpaca_eval.main.evaluate computes for ``records`` (one model's annotations):
    get_winrate's metrics and avg_length, and with ``glm_name`` the length-controlled win rate fitted with
    ``table`` as df_gamed.csv."""
    import sklearn

    glm = alpaca_eval.metrics.glm_winrate
    model = records[0]["generator_2"]
    model_outputs = pd.DataFrame(
        {
            "instruction": [r["instruction"] for r in records],
            "output": [r["output_2"] for r in records],
            "generator": [model for _ in records],
        }
    )
    reference_outputs = pd.DataFrame(
        {
            "instruction": [r["instruction"] for r in records],
            "output": [r["output_1"] for r in records],
            "generator": [r["generator_1"] for r in records],
        }
    )
    annotator = type("GivenVerdicts", (_GivenVerdicts,), {"records": records})
    download = glm.hf_hub_download
    if table is not None:
        glm.hf_hub_download = lambda **_: str(table)
    try:
        with sklearn.config_context(), warnings.catch_warnings():
            # scikit-learn 1.8+ deprecates the spelling alpaca-eval's fit uses (penalty="l1"): its warnings.
            warnings.simplefilter("ignore", FutureWarning)
            leaderboard, _ = alpaca_eval.main.evaluate(
                model_outputs=model_outputs,
                reference_outputs=reference_outputs,
                annotators_config="given",
                name=model,
                output_path=None,
                precomputed_leaderboard=None,
                is_return_instead_of_print=True,
                fn_metric="get_length_controlled_winrate" if glm_name else "get_winrate",
                metric_kwargs={"glm_name": glm_name, "save_weights_dir": None} if glm_name else None,
                sort_by="win_rate",
                Annotator=annotator,
            )
    finally:
        glm.hf_hub_download = download
    row: dict[str, Any] = leaderboard.loc[model].to_dict()
    return row
