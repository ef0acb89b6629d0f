"""What the API reads and writes: pydantic models, which are also its OpenAPI spec."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from backend.domain import (
    REPO_PART_PLAIN,
    EvalRequest,
    HistoryEntry,
    ModelType,
    Precision,
    RequestDetail,
    Status,
    WeightType,
)
from backend.services.redact import strip_server_paths

# The domain's repo-id rules, less its ban on '--' and '..' (no look-arounds in the spec's regex dialect).
MODEL_ID = rf"^{REPO_PART_PLAIN}/{REPO_PART_PLAIN}$"
MODEL_OR_NAMESPACE = rf"^{REPO_PART_PLAIN}/({REPO_PART_PLAIN}|\*)$"
NAMESPACE = rf"^{REPO_PART_PLAIN}$"
TEXT = r"^[^\x00]*$"  # free text: anything but NUL, which databases cannot store


class Strict(BaseModel):
    """Request bodies: unknown fields are refused (booleans are StrictBool: 0 is not false)."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. submission_rejected, unauthorized.")
    message: str = Field(description="What went wrong and what to do about it.")
    status: int
    rule: str | None = Field(None, description="The submission rule that failed (submission_rejected).")
    fix: str | None = Field(None, description="How to fix the submission (submission_rejected).")
    fields: list[dict[str, Any]] | None = Field(None, description="Invalid fields (invalid_input).")


class ErrorBody(BaseModel):
    """The one shape of every error the API returns."""

    error: ErrorDetail


class SubmissionIn(Strict):
    model: str = Field(pattern=MODEL_ID, description="The Hub model id, ORG/NAME.")
    revision: str = Field("main", min_length=1, max_length=200, pattern=r"^[^\s\x00]+$")
    precision: Precision = Precision.BFLOAT16
    weight_type: WeightType = WeightType.ORIGINAL
    model_type: ModelType
    base_model: str | None = Field(None, pattern=MODEL_ID, description="For Adapter and Delta weights.")
    use_chat_template: StrictBool | None = Field(
        None, description="Default: on for chat models, off otherwise."
    )


class RequestOut(BaseModel):
    id: int
    model: str
    revision: str
    sha: str
    precision: Precision
    weight_type: WeightType
    model_type: ModelType
    base_model: str | None
    use_chat_template: bool
    params_b: float | None
    architectures: list[str]
    license: str | None
    sender: str
    status: Status
    votes: int
    attempts: int
    submitted_at: datetime
    updated_at: datetime
    started_at: datetime | None

    @classmethod
    def of(cls, request: EvalRequest) -> RequestOut:
        fields = {name: getattr(request, name) for name in cls.model_fields if name != "architectures"}
        return cls(architectures=list(request.architectures), **fields)


class SubmittedOut(RequestOut):
    not_evaluated_on: dict[str, str] = Field(
        default_factory=dict,
        description="The deployment's judged leaderboards this request will not be evaluated on, each with the "
        "rule and the fix (a submission without its chat template is on the benchmark leaderboard only).",
    )


class QueuePage(BaseModel):
    status: Status | None
    offset: int
    limit: int
    items: list[RequestOut]
    next_offset: int | None = Field(description="Where the next page starts; null on the last page.")


class LogView(enum.Enum):
    """How much of a failed run's log a caller may read."""

    NONE = "none"  # anyone: the reason only
    TAIL = "tail"  # the submitter: the log's last lines, server paths reduced to file names
    FULL = "full"  # admins: the tail as it is, and the log's path on the server

    @classmethod
    def of(cls, user: str | None, is_admin: bool, sender: str) -> LogView:
        """What ``user`` (None: anonymous) may read of the log of a request ``sender`` submitted."""
        if user is not None and is_admin:
            return cls.FULL
        return cls.TAIL if user is not None and user == sender else cls.NONE


def visible_tail(tail: str | None, view: LogView) -> str | None:
    """What of a failed run's log tail a caller may read: none, the tail without server paths, or all."""
    if tail is None or view is LogView.NONE:
        return None
    return tail if view is LogView.FULL else strip_server_paths(tail)


def _reason(reason: str | None) -> str | None:
    return None if reason is None else strip_server_paths(reason)


class HistoryOut(BaseModel):
    from_status: Status | None
    to_status: Status
    actor: str
    reason: str | None = Field(description="Why the status changed (a failure's reason, never its log).")
    at: datetime
    log_tail: str | None = Field(
        None,
        description="The end of the log of the failed run that caused this change (submitter and admins).",
    )
    log_path: str | None = Field(None, description="Where that log is on the server (admins only).")

    @classmethod
    def of(cls, entry: HistoryEntry, view: LogView = LogView.NONE) -> HistoryOut:
        return cls(
            from_status=entry.from_status,
            to_status=entry.to_status,
            actor=entry.actor,
            reason=_reason(entry.reason),
            at=entry.at,
            log_tail=visible_tail(entry.log_tail, view),
            log_path=entry.log_path if view is LogView.FULL else None,
        )


class RequestDetailOut(BaseModel):
    request: RequestOut
    history: list[HistoryOut]
    voters: list[str]
    failure_reason: str | None = Field(description="Why the request failed, for everyone.")
    log_tail: str | None = Field(description="The end of the failed run's log (submitter and admins only).")
    log_path: str | None = Field(
        None, description="Where the failed run's log is on the server (admins only)."
    )

    @classmethod
    def of(cls, detail: RequestDetail, view: LogView) -> RequestDetailOut:
        request = detail.request
        return cls(
            request=RequestOut.of(request),
            history=[HistoryOut.of(h, view) for h in detail.history],
            voters=list(detail.voters),
            failure_reason=_reason(request.failure_reason),
            log_tail=visible_tail(request.failure_log_tail, view),
            log_path=request.failure_log_path if view is LogView.FULL else None,
        )


class VoteOut(BaseModel):
    request_id: int
    votes: int
    voted: bool = Field(description="Whether the caller's vote is now counted.")


class LeaderboardOut(BaseModel):
    name: str
    title: str
    kind: Literal["benchmark", "judged"]
    columns: list[str]
    sort: str = Field(description="The column the table is ranked by unless asked otherwise.")
    table: str = Field(description="Where its table is read.")


class LeaderboardPage(BaseModel):
    leaderboard: str
    columns: list[str]
    total: int = Field(description="Rows matching the filters.")
    offset: int
    limit: int
    rows: list[dict[str, str | float | int | bool | None]]


class ReasonIn(Strict):
    reason: str | None = Field(None, max_length=2000, pattern=TEXT)


class FlagIn(Strict):
    model: str = Field(pattern=MODEL_ID, description="ORG/NAME.")
    reason: str = Field(min_length=1, max_length=2000, pattern=TEXT)


class BlockIn(Strict):
    model: str = Field(pattern=MODEL_OR_NAMESPACE, description="ORG/NAME, or ORG/* for a whole namespace.")
    reason: str = Field(min_length=1, max_length=2000, pattern=TEXT)


class ProviderIn(Strict):
    namespace: str = Field(pattern=NAMESPACE)


class ListEntryOut(BaseModel):
    key: str
    added_by: str
    added_at: datetime
    reason: str | None


class RecoveredOut(BaseModel):
    request_id: int
    worker_id: str | None
    status: Status


class TokenIn(Strict):
    user: str = Field(max_length=100, pattern=NAMESPACE, description="A Hub user name.")
    admin: StrictBool = False


class TokenOut(BaseModel):
    id: int
    user: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart.")
    admin: bool
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown once, keep it secret.")


class SuspiciousVoterOut(BaseModel):
    """An arena voter whose votes look like abuse, with the figures the rules read."""

    user: str
    votes: int = Field(description="Votes cast in the period.")
    share_a: float = Field(description="Share of the votes for side A.")
    share_b: float = Field(description="Share of the votes for side B.")
    share_tie: float = Field(description="Share of the votes that are ties (tie or tie (bothbad)).")
    median_seconds: float | None = Field(
        description="Median seconds from the voted turn's last answer to the vote (None: no answer time)."
    )
    addresses: int = Field(description="Distinct client addresses (stored as keyed hashes) voted from.")
    reasons: list[str] = Field(
        description="Each rule broken, with its figures: same-side, always-tie, fast-votes, shared-address."
    )


class Health(BaseModel):
    status: str
    database: str
