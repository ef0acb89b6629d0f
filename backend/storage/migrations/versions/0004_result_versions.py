"""evaluations: result versions (a re-score adds version N+1 of the same run and keeps the earlier ones)

Revision ID: 0004
Revises: 0003

On SQLite the batch operations rebuild the table; Database.upgrade runs migrations with foreign keys off
there, so the rebuild's DROP TABLE does not cascade to publications.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("recorded_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("rescored_from", sa.Integer(), nullable=True))
        batch.drop_constraint("uq_evaluations_request_leaderboard", type_="unique")
        batch.create_unique_constraint(
            "uq_evaluations_request_leaderboard_version", ["request_id", "leaderboard", "version"]
        )
    op.execute("UPDATE evaluations SET recorded_at = finished_at")
    with op.batch_alter_table("evaluations") as batch:
        batch.alter_column("recorded_at", existing_type=sa.DateTime(), nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM evaluations WHERE version > 1")
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_constraint("uq_evaluations_request_leaderboard_version", type_="unique")
        batch.create_unique_constraint("uq_evaluations_request_leaderboard", ["request_id", "leaderboard"])
        batch.drop_column("rescored_from")
        batch.drop_column("recorded_at")
        batch.drop_column("version")
