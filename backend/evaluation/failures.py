"""Why a run failed, and whether running it again can help: the retry policy, as data.

Transient causes (out of memory, a lost node, a killed process, the Hub or the network failing) send the
request back to the queue until its attempts run out; causes that lie in the submission (corrupted
weights, a model that does not load, NaNs) fail it with a reason its author can act on.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class FailureRule:
    pattern: str  # searched (case-insensitively) in the error type, message and log tail
    transient: bool
    reason: str  # what the request's page says; {detail} is the matching error line


#: First match wins: specific causes before general ones.
FAILURE_RULES: tuple[FailureRule, ...] = (
    FailureRule(
        r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED",
        True,
        "ran out of GPU memory ({detail}); it will be retried, with a smaller batch where possible",
    ),
    FailureRule(
        r"NCCL|CUDA error: (?:an illegal memory access|unspecified launch failure)|ECC error|node failure",
        True,
        "the GPU or node failed ({detail})",
    ),
    FailureRule(
        r"SafetensorError|Error while deserializing header|incomplete metadata|invalid header|"
        r"MetadataIncompleteBuffer|file .* is truncated|unexpected end of file",
        False,
        "the model weights cannot be read: the safetensors files look corrupted or truncated ({detail}). "
        "Re-upload them with save_pretrained(..., safe_serialization=True) and submit the new commit",
    ),
    FailureRule(
        r"size mismatch for|Error\(s\) in loading state_dict|missing keys|does not appear to have a file named",
        False,
        "the weights do not match the model's config ({detail}). Check that config.json and the weights "
        "come from the same model, then submit again",
    ),
    FailureRule(
        r"\bnan\b|inf or nan|probability tensor contains",
        False,
        "the model produced NaN or infinite values ({detail}); this often means a precision the weights "
        "do not support: try bfloat16 or float16 instead",
    ),
    FailureRule(
        r"trust_remote_code=True",  # transformers asks for it; our own arguments say =False
        False,
        "the model needs custom code to load ({detail}); the leaderboard never runs code from model repositories",
    ),
    FailureRule(
        r"HfHubHTTPError|5\d\d Server Error|ConnectionError|ConnectTimeout|ReadTimeout|Temporary failure in "
        r"name resolution|Connection reset",
        True,
        "the Hub or the network failed ({detail})",
    ),
)


@dataclass(frozen=True)
class Failure:
    reason: str
    transient: bool


def _detail(text: str, match: re.Match[str]) -> str:
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end != -1 else len(text)].strip()[:300]


def classify(
    *,
    returncode: int | None,
    timed_out: bool,
    error_type: str | None,
    error_message: str | None,
    log_tail: str,
    timeout_seconds: float | None = None,
) -> Failure:
    """The failure of one run, from how its process ended and what it said."""
    if timed_out:
        hours = (timeout_seconds or 0) / 3600
        return Failure(
            f"the evaluation exceeded its time limit of {hours:g} h and was stopped; an admin can raise "
            "LEADERBOARD_EVAL_TIMEOUT_SECONDS and requeue it",
            transient=False,
        )
    text = "\n".join(filter(None, [error_type, error_message, log_tail]))
    for rule in FAILURE_RULES:
        match = re.search(rule.pattern, text, flags=re.IGNORECASE)
        if match:
            return Failure(rule.reason.format(detail=_detail(text, match)), rule.transient)
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else "?"
        return Failure(f"the evaluation process was killed ({name}); it will be retried", transient=True)
    if error_type:
        return Failure(
            f"the evaluation failed: {error_type}: {(error_message or '').strip()[:500]}", transient=False
        )
    return Failure(
        f"the evaluation process exited with status {returncode} without saying why", transient=True
    )
