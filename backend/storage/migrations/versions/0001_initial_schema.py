"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 05:08:32.717069

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "blocklist",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("added_by", sa.String(length=100), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_blocklist")),
    )
    op.create_table(
        "flags",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("added_by", sa.String(length=100), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_flags")),
    )
    op.create_table(
        "official_providers",
        sa.Column("namespace", sa.String(length=100), nullable=False),
        sa.Column("added_by", sa.String(length=100), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_official_providers")),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("namespace", sa.String(length=100), nullable=False),
        sa.Column("revision", sa.String(length=200), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=False),
        sa.Column("precision", sa.String(length=16), nullable=False),
        sa.Column("weight_type", sa.String(length=16), nullable=False),
        sa.Column("model_type", sa.String(length=32), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=True),
        sa.Column("use_chat_template", sa.Boolean(), nullable=False),
        sa.Column("params_b", sa.Float(), nullable=True),
        sa.Column("architectures", sa.JSON(), nullable=False),
        sa.Column("license", sa.String(length=200), nullable=True),
        sa.Column("sender", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("votes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('PENDING', 'RUNNING', 'FINISHED', 'FAILED', 'CANCELLED')",
            name=op.f("ck_requests_status"),
        ),
        sa.CheckConstraint("votes >= 0", name=op.f("ck_requests_votes_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        # The queue's ORDER BY (votes DESC, submitted_at, id) over pending requests: claims and listings.
        batch_op.create_index(
            "ix_requests_queue",
            [sa.text("votes DESC"), "submitted_at", "id"],
            unique=False,
            postgresql_where=sa.text("status = 'PENDING'"),
            sqlite_where=sa.text("status = 'PENDING'"),
        )
        batch_op.create_index(
            "ix_requests_heartbeat",
            ["heartbeat_at"],
            unique=False,
            postgresql_where=sa.text("status = 'RUNNING'"),
            sqlite_where=sa.text("status = 'RUNNING'"),
        )
        batch_op.create_index("ix_requests_namespace_submitted", ["namespace", "submitted_at"], unique=False)
        batch_op.create_index("ix_requests_status_updated", ["status", "updated_at"], unique=False)
        batch_op.create_index(
            "ux_requests_active",
            ["model", "sha", "precision"],
            unique=True,
            postgresql_where=sa.text("status IN ('FINISHED', 'PENDING', 'RUNNING')"),
            sqlite_where=sa.text("status IN ('FINISHED', 'PENDING', 'RUNNING')"),
        )

    op.create_table(
        "request_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_request_history_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_history")),
    )
    with op.batch_alter_table("request_history", schema=None) as batch_op:
        batch_op.create_index("ix_request_history_request", ["request_id", "id"], unique=False)

    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("voter", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name=op.f("fk_votes_request_id_requests"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint("request_id", "voter", name="uq_votes_request_voter"),
    )
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.create_index("ix_votes_voter", ["voter"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_index("ix_votes_voter")

    op.drop_table("votes")
    with op.batch_alter_table("request_history", schema=None) as batch_op:
        batch_op.drop_index("ix_request_history_request")

    op.drop_table("request_history")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_queue")
        batch_op.drop_index(
            "ux_requests_active",
            postgresql_where=sa.text("status IN ('FINISHED', 'PENDING', 'RUNNING')"),
            sqlite_where=sa.text("status IN ('FINISHED', 'PENDING', 'RUNNING')"),
        )
        batch_op.drop_index("ix_requests_status_updated")
        batch_op.drop_index("ix_requests_namespace_submitted")
        batch_op.drop_index(
            "ix_requests_heartbeat",
            postgresql_where=sa.text("status = 'RUNNING'"),
            sqlite_where=sa.text("status = 'RUNNING'"),
        )

    op.drop_table("requests")
    op.drop_table("official_providers")
    op.drop_table("flags")
    op.drop_table("blocklist")
