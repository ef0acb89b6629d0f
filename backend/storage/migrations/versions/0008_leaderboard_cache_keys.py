"""What the leaderboard's cache reads to know the table changed: an index on evaluations (leaderboard, id)
(how many results a leaderboard has, and the newest, without reading their rows) and a count of changes of
each model's Hub metadata (likes, availability and license; a refresh that changes none leaves it)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_evaluations_leaderboard_id", "evaluations", ["leaderboard", "id"])
    op.add_column("model_metadata", sa.Column("changes", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("model_metadata") as batch:
        batch.drop_column("changes")
    op.drop_index("ix_evaluations_leaderboard_id", table_name="evaluations")
