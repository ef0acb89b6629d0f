"""The vocabulary of the leaderboard: statuses, submission choices and the records that carry them."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeGuard

from backend.errors import InvalidInput


class Status(enum.StrEnum):
    """Where a request is in its life. Every change is a guarded transition recorded in the history."""

    PENDING = "PENDING"  # waiting in the queue, ranked by votes; the only status that takes votes
    RUNNING = "RUNNING"  # claimed by a worker that holds a lease and heart-beats
    FINISHED = "FINISHED"  # evaluated; scores stored (final)
    FAILED = "FAILED"  # gave up: the reason says why; an admin may requeue it
    CANCELLED = "CANCELLED"  # withdrawn before it finished (final)


#: The statuses in which a (model, sha, precision) counts as submitted: a second request is refused.
ACTIVE_STATUSES: frozenset[Status] = frozenset({Status.PENDING, Status.RUNNING, Status.FINISHED})

#: Every allowed transition: target status -> the statuses it may come from.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.RUNNING: frozenset({Status.PENDING}),  # claim
    Status.FINISHED: frozenset({Status.RUNNING}),
    Status.FAILED: frozenset({Status.RUNNING}),
    # retry after a transient failure or a lost worker; admin requeue of a failed request
    Status.PENDING: frozenset({Status.RUNNING, Status.FAILED}),
    Status.CANCELLED: frozenset({Status.PENDING, Status.RUNNING}),
}


class Precision(enum.StrEnum):
    """How the weights are loaded for evaluation."""

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT8 = "8bit"  # bitsandbytes 8-bit
    INT4 = "4bit"  # bitsandbytes 4-bit
    GPTQ = "GPTQ"  # weights already quantized with GPTQ


class WeightType(enum.StrEnum):
    """What the repository holds."""

    ORIGINAL = "Original"  # full weights
    DELTA = "Delta"  # full-size differences to be added to the base model
    ADAPTER = "Adapter"  # a PEFT adapter applied on top of the base model


class ModelType(enum.StrEnum):
    """How the model was made, as its author declares it."""

    PRETRAINED = "pretrained"
    CONTINUOUSLY_PRETRAINED = "continuously-pretrained"
    FINE_TUNED = "fine-tuned"
    CHAT = "chat"
    MERGE = "merge"


def parse_choice(enum_type: type[enum.StrEnum], value: str, field_name: str) -> enum.StrEnum:
    """Parse a user-given choice case-insensitively, or say which values are accepted."""
    for member in enum_type:
        if value.lower() == member.value.lower():
            return member
    accepted = ", ".join(m.value for m in enum_type)
    raise InvalidInput(f"{field_name} '{value}' is not one of: {accepted}")


# Hub repo ids, for models and datasets alike: a namespace and a name, each 1-96 of [A-Za-z0-9._-], not
# starting or ending with '-' or '.', no '--' or '..' anywhere, not ending in '.git' (the rules
# huggingface_hub's validate_repo_id applies; the namespace is required here). The one source of the rule:
# use is_repo_id / validate_repo_id.
_REPO_PART = r"(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
# The same without the look-ahead, for the API's spec (JSON Schema validators often lack look-arounds): it
# admits '--' and '..', which the services then refuse.
REPO_PART_PLAIN = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}(?<!\.git)\Z")
SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")
#: A Hub user or org name: what a repo id's namespace may be.
HUB_NAME_RE = re.compile(rf"^{_REPO_PART}\Z")
#: What a repo id must look like, for messages that say how to fix one.
REPO_ID_RULE = "ORG/NAME (letters, digits, '-', '_' and '.'; no '--' or '..'), as in the repository's Hub URL"

#: A revision is a branch, tag or commit as git names them: at most 255 characters, none of git's
#: forbidden ones (controls, space, ~ ^ : ? * [ \\), no '..', '@{' or '//', not starting with '/', '-' or
#: '.' and not ending with '/', '.' or '.lock' (git check-ref-format; the Hub's PR refs are `refs/pr/N`).
MAX_REVISION_CHARS = 255
_REVISION_RE = re.compile(
    rf"^(?![/.-])(?!.*(?:\.\.|@\{{|//|/\.))[^\x00-\x20\x7f~^:?*\[\\]{{1,{MAX_REVISION_CHARS}}}(?<![/.])(?<!\.lock)\Z"
)
REVISION_RULE = (
    f"a branch, tag or commit sha of at most {MAX_REVISION_CHARS} characters: no spaces, control characters, '..', or any "
    "of ~ ^ : ? * [ \\"
)


def is_repo_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a Hub repository id ORG/NAME (a model's or a dataset's)."""
    return isinstance(value, str) and REPO_ID_RE.match(value) is not None


def is_hub_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a Hub user or org name (a repo id's namespace)."""
    return isinstance(value, str) and HUB_NAME_RE.match(value) is not None


def is_sha(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a full 40-hex commit sha, the only form a frozen revision takes."""
    return isinstance(value, str) and SHA_RE.match(value) is not None


def is_revision(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a branch, tag or commit (the revision a submission asks for)."""
    return isinstance(value, str) and _REVISION_RE.match(value) is not None


def preview(value: object, limit: int = 80) -> str:
    """``value`` as a message quotes it: its repr, cut to ``limit`` characters, so no input floods one."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_repo_id(value: object, what: str = "repository") -> str:
    """``value`` if it is a Hub repository id, else InvalidInput naming ``what`` (e.g. "model", "dataset")."""
    if not is_repo_id(value):
        raise InvalidInput(f"{what} id {preview(value)} is not a Hub repository id: give {REPO_ID_RULE}")
    return value


def namespace_of(model: str) -> str:
    """The org or user that owns a model id: what the weekly submission limit counts."""
    return model.split("/", 1)[0]


@dataclass(frozen=True)
class Submission:
    """What a model author asks for, before validation."""

    model: str
    sender: str
    revision: str = "main"
    precision: Precision = Precision.BFLOAT16
    weight_type: WeightType = WeightType.ORIGINAL
    model_type: ModelType | None = None
    base_model: str | None = None
    use_chat_template: bool | None = None  # None: on for chat models, off otherwise


@dataclass(frozen=True)
class EvalRequest:
    """A stored request: one (model, commit, precision) to evaluate."""

    id: int
    model: str
    revision: str  # as asked ("main")
    sha: str  # the commit it was frozen to at submission
    precision: Precision
    weight_type: WeightType
    model_type: ModelType
    base_model: str | None
    use_chat_template: bool
    params_b: float | None  # parameters, in billions, read from safetensors headers
    architectures: tuple[str, ...]
    license: str | None
    sender: str
    status: Status
    votes: int
    attempts: int  # how many times a worker has started it
    submitted_at: datetime
    updated_at: datetime
    worker_id: str | None = None
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    job_id: str | None = None  # the executor's id of the current (or last) run: a Slurm job id
    # While FAILED: why, in words its author can act on (shown to everyone, no server paths), and the
    # failed run's log: its tail (for the submitter and admins) and its path on the server (admins).
    failure_reason: str | None = None
    failure_log_path: str | None = None
    failure_log_tail: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One status change of a request, written in the same transaction as the change."""

    request_id: int
    from_status: Status | None  # None for the creation
    to_status: Status
    actor: str
    reason: str | None  # only the reason: a failed run's log is in the two fields below
    at: datetime
    log_path: str | None = None  # a failed run's log on the server (admins)
    log_tail: str | None = None  # its last lines (the submitter and admins)


@dataclass(frozen=True)
class Vote:
    request_id: int
    user: str
    at: datetime


@dataclass(frozen=True)
class RequestDetail:
    request: EvalRequest
    history: tuple[HistoryEntry, ...] = field(default_factory=tuple)
    voters: tuple[str, ...] = field(default_factory=tuple)
