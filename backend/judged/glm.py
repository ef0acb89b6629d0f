"""AlpacaEval 2's length-controlled win rate: its GLM, fitted exactly as alpaca-eval 0.6.6 fits it.

alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate fits, per model, a logistic regression of the
preference (in [0, 1], a draw 0.5) on ``tanh(std_delta_len)``, the instruction's difficulty and a model term,
where std_delta_len = (len(output_1) - len(output_2)) / its standard deviation over the model's records. It
is scikit-learn's LogisticRegressionCV (L1, liblinear, no intercept, 5-fold GroupKFold over C, a log loss
that takes the preference as a probability), trained together with two "gamed" baselines (verbose and
concise versions of the reference) weighted 0.1 each; it predicts every record with the length difference
set to 0 and reports 100 * the mean and the standard error of those predictions.

The instruction difficulties and the gamed baselines are the table ``df_gamed.csv`` of the Hub dataset
tatsu-lab/alpaca_eval, which alpaca-eval downloads inside the function. Given that table
(``read_glm_table``), this module computes ``length_controlled_v1``, the published number. Without it, it
fits alpaca-eval's own reduced GLM ``length_controlled_minimal`` (length and model terms only) and says so:
that number is not comparable with the published ones.

As in alpaca-eval, a record's difficulty is the table's by position: record i takes the difficulty on row i
of the table's first rows per instruction (AlpacaEval's 805 instructions, in its order).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import GlmTableInvalid
from backend.judged.annotations import Annotations, read_limited
from backend.judged.metrics import mean, percent, sem, std

MIB = 2**20
#: df_gamed.csv is two gamed baselines x 805 instructions, well under a MB.
MAX_TABLE_BYTES = 64 * MIB
MAX_TABLE_ROWS = 200_000
TABLE_COLUMNS = ("index", "instruction_difficulty", "not_gamed_baseline", "std_delta_len", "preference")
TABLE_FIX = "pass df_gamed.csv from the Hub dataset tatsu-lab/alpaca_eval, unchanged"

GLM_V1 = "length_controlled_v1"
GLM_MINIMAL = "length_controlled_minimal"
#: alpaca-eval's GLM_INFO: the gamed baselines' weight (split between the two of them), the folds.
REGULARIZE_TO_BASELINE_LAMBDA = 0.2
N_SPLITS = 5
RANDOM_STATE = 123

NOTE_V1 = (
    "AlpacaEval 2's GLM (length_controlled_v1) with the instruction difficulties and gamed baselines of the "
    "given table: the published length-controlled win rate when the records are AlpacaEval's instructions "
    "in its order, judged by its annotator"
)
NOTE_MINIMAL = (
    "fallback, not AlpacaEval 2's published length-controlled win rate: no GLM table (AlpacaEval's "
    "df_gamed.csv) was given, so this is alpaca-eval's reduced GLM length_controlled_minimal (length and "
    "model terms only: no instruction difficulty, no gamed baselines), which differs from the published "
    "number by up to several points, and whose lc_standard_error is about 0 by construction (every record "
    "gets the same prediction), not an uncertainty; pass --glm-table df_gamed.csv for the published GLM"
)

_FALSE = {"False", "FALSE", "false"}  # pandas.read_csv's boolean spellings
_TRUE = {"True", "TRUE", "true"}
_MISSING = {"", "nan", "NaN", "NA", "N/A", "null", "NULL", "None"}


@dataclass(frozen=True, eq=False)
class GlmTable:
    """df_gamed.csv: the gamed baselines' rows and, per instruction, its difficulty."""

    std_delta_len: np.ndarray  # float, per row
    instruction_difficulty: np.ndarray  # float, per row
    not_gamed_baseline: np.ndarray  # bool, per row (False: a gamed baseline)
    preference: np.ndarray  # float in [0, 1], NaN where not judged
    difficulty_by_row: dict[int, float]  # alpaca-eval's lookup: row number -> difficulty, first row per index
    n_instructions: int
    source: str  # the file, as messages name it


@dataclass(frozen=True)
class LengthControlled:
    """The length-controlled win rate, the GLM that gave it, and what a reader must know about it."""

    glm: str | None  # length_controlled_v1, length_controlled_minimal, or None when not computed
    winrate: float | None
    standard_error: float | None
    note: str


def read_glm_table(path: Path, source: str | None = None) -> GlmTable:
    """AlpacaEval's df_gamed.csv from ``path``; ``source`` is how messages name the file."""
    source = source if source is not None else str(path)
    try:
        data = read_limited(path, MAX_TABLE_BYTES)
    except FileNotFoundError as exc:
        raise GlmTableInvalid(source, "no such file", TABLE_FIX) from exc
    except IsADirectoryError as exc:
        raise GlmTableInvalid(source, "a folder, not a file", TABLE_FIX) from exc
    except OSError as exc:
        raise GlmTableInvalid(
            source,
            f"cannot be read ({exc.strerror or type(exc).__name__})",
            "check the file and its permissions",
        ) from exc
    if data is None:
        raise GlmTableInvalid(source, f"larger than {MAX_TABLE_BYTES // MIB} MiB", TABLE_FIX)
    return parse_glm_table(data, source)


def parse_glm_table(data: bytes, source: str) -> GlmTable:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GlmTableInvalid(source, "not UTF-8 text", TABLE_FIX) from exc
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise GlmTableInvalid(source, f"not a CSV file ({exc})", TABLE_FIX) from exc
    if not rows:
        raise GlmTableInvalid(source, "empty", TABLE_FIX)
    header, body = rows[0], [r for r in rows[1:] if r]
    missing = [c for c in TABLE_COLUMNS if c not in header]
    if missing:
        raise GlmTableInvalid(source, f"no column {', '.join(missing)}", TABLE_FIX)
    if not body:
        raise GlmTableInvalid(source, "no rows", TABLE_FIX)
    if len(body) > MAX_TABLE_ROWS:
        raise GlmTableInvalid(source, f"{len(body)} rows, more than {MAX_TABLE_ROWS}", TABLE_FIX)
    at = {c: header.index(c) for c in TABLE_COLUMNS}
    index: list[int] = []
    difficulty: list[float] = []
    delta: list[float] = []
    not_gamed: list[bool] = []
    preference: list[float] = []
    for number, row in enumerate(body):
        if len(row) != len(header):
            raise GlmTableInvalid(
                source, f"row {number + 2} has {len(row)} fields, the header {len(header)}", TABLE_FIX
            )

        def cell(column: str, row: list[str] = row, number: int = number) -> tuple[str, str]:
            return row[at[column]].strip(), f"row {number + 2}, column {column}"

        value, where = cell("index")
        try:
            index.append(int(value))
        except ValueError as exc:
            raise GlmTableInvalid(source, f"{where}: {value[:40]!r} is not an integer", TABLE_FIX) from exc
        for column, out in (("instruction_difficulty", difficulty), ("std_delta_len", delta)):
            value, where = cell(column)
            out.append(_finite(value, where, source))
        value, where = cell("not_gamed_baseline")
        if value not in _TRUE | _FALSE:
            raise GlmTableInvalid(source, f"{where}: {value[:40]!r} is not True or False", TABLE_FIX)
        not_gamed.append(value in _TRUE)
        value, where = cell("preference")
        if value in _MISSING:
            preference.append(math.nan)
        else:
            p = _finite(value, where, source)
            if not 0 <= p <= 1:
                raise GlmTableInvalid(source, f"{where}: {p!r} is not a probability in [0, 1]", TABLE_FIX)
            preference.append(p)
    by_row: dict[int, float] = {}
    seen: set[int] = set()
    for number, (i, d) in enumerate(zip(index, difficulty, strict=True)):
        if i not in seen:  # pandas drop_duplicates("index") keeps the first row, and its row label
            seen.add(i)
            by_row[number] = d
    return GlmTable(
        std_delta_len=np.array(delta, dtype=float),
        instruction_difficulty=np.array(difficulty, dtype=float),
        not_gamed_baseline=np.array(not_gamed, dtype=bool),
        preference=np.array(preference, dtype=float),
        difficulty_by_row=by_row,
        n_instructions=len(seen),
        source=source,
    )


def _finite(value: str, where: str, source: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise GlmTableInvalid(source, f"{where}: {value[:40]!r} is not a number", TABLE_FIX) from exc
    if not math.isfinite(number):
        raise GlmTableInvalid(source, f"{where}: {value[:40]!r} is not a finite number", TABLE_FIX)
    return number


# ------------------------------------------------------------------------------------------- the fit


def length_controlled_winrate(annotations: Annotations, table: GlmTable | None) -> LengthControlled:
    """get_length_controlled_winrate(glm_name=length_controlled_v1 with ``table``, else
    length_controlled_minimal); not computed (None, with the reason) where alpaca-eval would fail."""
    glm, note = (GLM_V1, NOTE_V1) if table is not None else (GLM_MINIMAL, NOTE_MINIMAL)
    records = annotations.records
    n = len(records)
    if annotations.generator_1 == annotations.generator_2:
        # alpaca-eval: the reference against itself is 0.5 on every judged record, by construction.
        predicted = np.full(sum(r.preference is not None for r in records), 0.5)
        return LengthControlled(glm, percent(mean(predicted)), percent(sem(predicted)), note)
    delta = np.array([len(r.output_1) - len(r.output_2) for r in records], dtype=float)
    deviation = std(delta)
    if deviation is None or deviation == 0:
        return _not_computed(
            "the length differences (len(output_1) - len(output_2)) must vary across at least two records "
            "for the GLM's standardised length term"
        )
    std_delta_len = delta / deviation
    preference = np.array([math.nan if r.preference is None else r.preference for r in records])
    preference = np.where(preference == 0, 1.5, preference) - 1
    judged = ~np.isnan(preference)

    if table is None:
        # length_controlled_minimal: np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1
        x_train = np.column_stack([np.tanh(std_delta_len), np.ones(n)])[judged]
        x_test = np.column_stack([np.zeros(n), np.ones(n)])
        y_train, weight = preference[judged], None
        if len(y_train) < N_SPLITS:
            return _not_computed(
                f"the GLM's {N_SPLITS}-fold cross-validation needs {N_SPLITS} judged records"
            )
    else:
        missing = [i for i in range(n) if i not in table.difficulty_by_row]
        if missing:
            raise GlmTableInvalid(
                table.source,
                f"it has instruction difficulties for {table.n_instructions} instructions, and record "
                f"{missing[0]} has none (alpaca-eval matches records to instructions by position)",
                "score the annotations of AlpacaEval's instructions, in its order, or leave out --glm-table",
            )
        difficulty = np.array([table.difficulty_by_row[i] for i in range(n)])
        # length_controlled_v1: np.tanh(std_delta_len) + instruction_difficulty
        #   + not_gamed_baseline.astype(float) - 1, trained on the gamed rows followed by the model's.
        x_model = np.column_stack([np.tanh(std_delta_len), difficulty, np.ones(n)])
        x_gamed = np.column_stack(
            [
                np.tanh(table.std_delta_len),
                table.instruction_difficulty,
                table.not_gamed_baseline.astype(float),
            ]
        )
        not_gamed = np.concatenate([table.not_gamed_baseline, np.ones(n, dtype=bool)])
        weight_all = not_gamed.astype(float) + (REGULARIZE_TO_BASELINE_LAMBDA * ~not_gamed).astype(float) / 2
        y_all = np.concatenate([table.preference, preference])
        keep = ~np.isnan(y_all)
        x_train = np.vstack([x_gamed, x_model])[keep]
        y_train, weight = y_all[keep], weight_all[keep]
        x_test = np.column_stack([np.zeros(n), difficulty, np.ones(n)])
        if len(y_train) < N_SPLITS:
            return _not_computed(f"the GLM's {N_SPLITS}-fold cross-validation needs {N_SPLITS} judged rows")
        if n != table.n_instructions:
            note += (
                f"; the table describes {table.n_instructions} instructions and the file has {n} records, "
                "matched by position as alpaca-eval does"
            )

    try:
        predicted, warned = _fit_predict(x_train, y_train, weight, x_test)
    except ValueError as exc:  # scikit-learn refusing the data: the metrics above stand without it
        return _not_computed(f"scikit-learn could not fit the GLM ({exc})")
    if warned:
        note += f"; scikit-learn warned: {warned}"
    return LengthControlled(glm, percent(mean(predicted)), percent(sem(predicted)), note)


def _not_computed(reason: str) -> LengthControlled:
    return LengthControlled(None, None, None, f"not computed: {reason}")


def _fit_predict(
    x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, x_test: np.ndarray
) -> tuple[np.ndarray, str]:
    """alpaca-eval's fit_LogisticRegressionCV(is_ytrue_proba=True, n_splits=5), then predict_proba.

    The preference is a probability, which scikit-learn's classifiers do not take: each row is given twice,
    labelled 1 with weight p and 0 with weight 1 - p (times its own weight), both in one CV group, and the
    CV scores the log loss against p. Metadata routing, which alpaca-eval turns on for the whole process,
    is on only for this fit.
    """
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    m = len(y)
    groups = np.concatenate([np.arange(m), np.arange(m)])
    x_dup = np.vstack([x, x])
    y_dup = np.concatenate([np.ones(m, dtype=np.int64), np.zeros(m, dtype=np.int64)])
    true_prob = np.concatenate([y, 1 - y])
    if sample_weight is None:
        true_sample_weight = None
        weight = true_prob
    else:
        true_sample_weight = np.concatenate([sample_weight, sample_weight])
        weight = true_prob * true_sample_weight
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scorer = make_scorer(
            _logloss_continuous, response_method="predict_proba", greater_is_better=False
        ).set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(
            cv=GroupKFold(n_splits=N_SPLITS),
            scoring=scorer,
            random_state=RANDOM_STATE,
            dual=False,
            l1_ratios=(1.0,),  # penalty="l1" in alpaca-eval, spelled as scikit-learn >= 1.8 asks
            solver="liblinear",
            n_jobs=None,
            fit_intercept=False,
            use_legacy_attributes=False,
        )
        model.set_fit_request(sample_weight=True)
        model.fit(
            x_dup,
            y_dup,
            sample_weight=weight,
            groups=groups,
            true_sample_weight=true_sample_weight,
            true_prob=true_prob,
        )
        predicted = model.predict_proba(x_test)[:, 1]
    convergence = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    for other in caught:
        if not issubclass(other.category, ConvergenceWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return predicted, convergence[0] if convergence else ""


def _logloss_continuous(
    y_true: np.ndarray, y_pred: np.ndarray, true_prob: Any, true_sample_weight: Any = None
) -> float:
    """alpaca-eval's scorer: the log loss against the preference itself (the label says which side)."""
    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
    losses = target * np.log(y_pred) + (1 - target) * np.log(1 - y_pred)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return float(-np.mean(losses))
