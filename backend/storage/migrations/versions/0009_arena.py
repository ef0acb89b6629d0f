"""The arena: battles (two hidden models, one vote), their turns, and votes per user per day (the daily cap)

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WINNERS = "'model_a', 'model_b', 'tie', 'tie (bothbad)'"


def upgrade() -> None:
    op.create_table(
        "arena_battles",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("arena", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("model_a", sa.String(256), nullable=False),
        sa.Column("model_b", sa.String(256), nullable=False),
        sa.Column("user", sa.String(100), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("question", sa.String(200), nullable=True),
        sa.Column("turns", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("winner", sa.String(16), nullable=True),
        sa.Column("voted_at", sa.DateTime(), nullable=True),
        sa.Column("revealed_at", sa.DateTime(), nullable=True),
        sa.Column("anony", sa.Boolean(), nullable=False),
        sa.Column("import_key", sa.String(64), nullable=True),
        sa.CheckConstraint("model_a <> model_b", name="ck_arena_battles_two_models"),
        sa.CheckConstraint(f"winner IS NULL OR winner IN ({WINNERS})", name="ck_arena_battles_winner"),
        sa.CheckConstraint("mode IN ('live', 'static', 'imported')", name="ck_arena_battles_mode"),
        sa.PrimaryKeyConstraint("id", name="pk_arena_battles"),
        sa.UniqueConstraint("import_key", name="uq_arena_battles_import_key"),
    )
    op.create_index(
        "ix_arena_battles_votes",
        "arena_battles",
        ["arena", "id"],
        postgresql_where=sa.text("winner IS NOT NULL"),
        sqlite_where=sa.text("winner IS NOT NULL"),
    )
    op.create_index("ix_arena_battles_user", "arena_battles", ["user", "id"])
    op.create_table(
        "arena_turns",
        sa.Column("battle_id", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("answer_a", sa.Text(), nullable=True),
        sa.Column("answer_b", sa.Text(), nullable=True),
        sa.Column("finish_a", sa.String(16), nullable=True),
        sa.Column("finish_b", sa.String(16), nullable=True),
        sa.Column("answered_a_at", sa.DateTime(), nullable=True),
        sa.Column("answered_b_at", sa.DateTime(), nullable=True),
        sa.Column("started_a_at", sa.DateTime(), nullable=True),
        sa.Column("started_b_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["arena_battles.id"],
            name="fk_arena_turns_battle_id_arena_battles",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("battle_id", "turn", name="pk_arena_turns"),
    )
    op.create_table(
        "arena_voter_days",
        sa.Column("voter", sa.String(100), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("votes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("voter", "day", name="pk_arena_voter_days"),
    )


def downgrade() -> None:
    op.drop_table("arena_voter_days")
    op.drop_table("arena_turns")
    op.drop_index("ix_arena_battles_user", table_name="arena_battles")
    op.drop_index("ix_arena_battles_votes", table_name="arena_battles")
    op.drop_table("arena_battles")
