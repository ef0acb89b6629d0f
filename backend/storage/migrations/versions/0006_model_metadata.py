"""model_metadata: the Hub metadata of submitted models (likes, availability, license), refreshed by the
scheduler

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_metadata",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("likes", sa.Integer(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("license", sa.String(length=200), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_model_metadata")),
    )


def downgrade() -> None:
    op.drop_table("model_metadata")
