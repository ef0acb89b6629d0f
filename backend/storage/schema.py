"""The tables. Invariants live here, in the database: one vote per (request, user), no second active
request for one (model, sha, precision), and an index that serves the queue's ORDER BY."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from backend.domain import ACTIVE_STATUSES, Status


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, stored as naive UTC so SQLite and PostgreSQL compare it alike."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database: use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_status_values = ", ".join(f"'{s.value}'" for s in Status)
_active_values = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATUSES))
_pending = text(f"status = '{Status.PENDING.value}'")
_running = text(f"status = '{Status.RUNNING.value}'")
_active = text(f"status IN ({_active_values})")

requests = Table(
    "requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("namespace", String(100), nullable=False),
    Column("revision", String(200), nullable=False),
    Column("sha", String(40), nullable=False),
    Column("precision", String(16), nullable=False),
    Column("weight_type", String(16), nullable=False),
    Column("model_type", String(32), nullable=False),
    Column("base_model", String(200), nullable=True),
    Column("use_chat_template", Boolean, nullable=False),
    Column("params_b", Float, nullable=True),
    Column("architectures", JSON, nullable=False, default=list),
    Column("license", String(200), nullable=True),
    Column("sender", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("votes", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("submitted_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("worker_id", String(200), nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("job_id", String(100), nullable=True),
    # Why a FAILED request failed, for everyone; the log of the failed run, for its submitter and admins.
    Column("failure_reason", Text, nullable=True),
    Column("failure_log_path", Text, nullable=True),
    Column("failure_log_tail", Text, nullable=True),
    CheckConstraint(f"status IN ({_status_values})", name="status"),
    CheckConstraint("votes >= 0", name="votes_non_negative"),
    # The queue: pending requests by votes, then submission order. Serves both the claim and the listing.
    Index(
        "ix_requests_queue",
        text("votes DESC"),
        "submitted_at",
        "id",
        postgresql_where=_pending,
        sqlite_where=_pending,
    ),
    # No second active request for the same (model, sha, precision): FAILED and CANCELLED may be resubmitted.
    Index(
        "ux_requests_active",
        "model",
        "sha",
        "precision",
        unique=True,
        postgresql_where=_active,
        sqlite_where=_active,
    ),
    Index("ix_requests_namespace_submitted", "namespace", "submitted_at"),
    Index("ix_requests_status_updated", "status", "updated_at"),
    Index("ix_requests_heartbeat", "heartbeat_at", postgresql_where=_running, sqlite_where=_running),
)

request_history = Table(
    "request_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("log_path", Text, nullable=True),  # a failed run's log, on the row of its failure
    Column("log_tail", Text, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_request_history_request", "request_id", "id"),
)

votes = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("voter", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("request_id", "voter", name="uq_votes_request_voter"),
    Index("ix_votes_voter", "voter"),
)

blocklist = Table(
    "blocklist",
    metadata,
    Column("model", String(200), primary_key=True),  # ORG/NAME, or ORG/* for a whole namespace
    Column("reason", Text, nullable=False),
    Column("added_by", String(100), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)

official_providers = Table(
    "official_providers",
    metadata,
    Column("namespace", String(100), primary_key=True),
    Column("added_by", String(100), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)

flags = Table(
    "flags",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("added_by", String(100), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)

# One run per (request, leaderboard): version 1 is stored with the FINISHED transition, and the unique
# constraint is what makes a result recorded once, whichever worker finishes the request. A re-score adds
# version N+1 (same run, scores recomputed from its stored samples); earlier versions are kept.
evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("leaderboard", String(100), nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("scores", JSON, nullable=False),  # the published columns
    Column("stderrs", JSON, nullable=False),
    Column("results", JSON, nullable=False),  # the harness's aggregated output, without samples
    Column("provenance", JSON, nullable=False),  # versions, task hashes, dataset revisions, seeds, command...
    Column("artifacts", Text, nullable=False),  # folder holding the results file, samples and the log
    Column("attempt", Integer, nullable=False),
    Column("worker_id", String(200), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("recorded_at", UTCDateTime, nullable=False),  # when this version was stored
    Column("rescored_from", Integer, nullable=True),  # the id of the version this one re-scored
    UniqueConstraint(
        "request_id", "leaderboard", "version", name="uq_evaluations_request_leaderboard_version"
    ),
    # How many results a leaderboard has and its newest, read on every page (the table's cache key).
    Index("ix_evaluations_leaderboard_id", "leaderboard", "id"),
)

# What was published where: one row per (evaluation, target). A row with published_at NULL is in the outbox:
# queued for that target and not yet delivered; the unique constraint is what makes a result published once.
publications = Table(
    "publications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("evaluation_id", Integer, ForeignKey("evaluations.id", ondelete="CASCADE"), nullable=False),
    Column("target", String(500), nullable=False),  # a resolved local folder, or hf://datasets/ORG/NAME
    Column("queued_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    Column("files", JSON, nullable=False),  # paths (relative to the target) written for this evaluation
    Column("last_error", Text, nullable=True),  # why the last delivery failed, while in the outbox
    UniqueConstraint("evaluation_id", "target", name="uq_publications_evaluation_target"),
    Index("ix_publications_target_published", "target", "published_at"),
)

# API tokens for air-gapped deployments and tests (Hugging Face tokens are verified with the Hub instead).
# Only a SHA-256 of each token is kept; the token itself is shown once, when it is created.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),  # the token's first characters, to tell tokens apart
    Column("is_admin", Boolean, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_api_tokens_user", "user"),
)

# The Hub metadata of submitted models, as the scheduler last refreshed it: one row per model repository
# (requests keep the license their submission was validated with; this is the model's current one).
model_metadata = Table(
    "model_metadata",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("likes", Integer, nullable=False),
    Column("available", Boolean, nullable=False),  # the repository exists and is readable
    Column("license", String(200), nullable=True),
    Column("refreshed_at", UTCDateTime, nullable=False),
    # Times likes, availability or license changed (1 when first saved): the table's cache key sums them.
    Column("changes", Integer, nullable=False, server_default="1"),
)

# The arena. A battle is two models answering one user's prompts side by side, names hidden until the vote
# (or a reveal); its winner column is its vote, set once by a guarded update. Imported battles keep the key
# of their record, so importing a file twice adds nothing.
ARENA_WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
_arena_winners = ", ".join(f"'{w}'" for w in ARENA_WINNERS)
_voted = text("winner IS NOT NULL")

arena_battles = Table(
    "arena_battles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("arena", String(100), nullable=False),
    Column("mode", String(16), nullable=False),  # live, static or imported
    Column("model_a", String(256), nullable=False),
    Column("model_b", String(256), nullable=False),
    Column("user", String(100), nullable=True),  # who battled (None: imported); never published
    Column(
        "address", String(64), nullable=True
    ),  # a keyed hash of the client's address, for the abuse report
    Column("question", String(200), nullable=True),  # static: "<judged leaderboard>:<instruction>"
    Column("turns", Integer, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("winner", String(16), nullable=True),
    Column("voted_at", UTCDateTime, nullable=True),
    Column("revealed_at", UTCDateTime, nullable=True),
    Column("anony", Boolean, nullable=False),  # the vote was cast while both names were hidden
    Column("import_key", String(64), nullable=True, unique=True),
    CheckConstraint("model_a <> model_b", name="two_models"),
    CheckConstraint(f"winner IS NULL OR winner IN ({_arena_winners})", name="winner"),
    CheckConstraint("mode IN ('live', 'static', 'imported')", name="mode"),
    # The ratings read every vote of an arena.
    Index("ix_arena_battles_votes", "arena", "id", postgresql_where=_voted, sqlite_where=_voted),
    Index("ix_arena_battles_user", "user", "id"),
)

arena_turns = Table(
    "arena_turns",
    metadata,
    Column("battle_id", Integer, ForeignKey("arena_battles.id", ondelete="CASCADE"), primary_key=True),
    Column("turn", Integer, primary_key=True),  # 1, 2, ...
    Column("prompt", Text, nullable=False),
    Column("answer_a", Text, nullable=True),  # None until the model has answered in full
    Column("answer_b", Text, nullable=True),
    Column("finish_a", String(16), nullable=True),  # stop or length
    Column("finish_b", String(16), nullable=True),
    Column("answered_a_at", UTCDateTime, nullable=True),
    Column("answered_b_at", UTCDateTime, nullable=True),
    Column(
        "started_a_at", UTCDateTime, nullable=True
    ),  # an answer being generated (a claim, released on failure)
    Column("started_b_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Votes per user per UTC day: the daily cap is a guarded increment of this row, in the vote's transaction.
arena_voter_days = Table(
    "arena_voter_days",
    metadata,
    Column("voter", String(100), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD
    Column("votes", Integer, nullable=False),
)
