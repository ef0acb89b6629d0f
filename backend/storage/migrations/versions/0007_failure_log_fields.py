"""Failure log fields: a failed run's log path and log tail kept apart from its reason, on the request and
on the history row of the failure, so each can be shown to whom it belongs

Until now the reason, the log path and the log tail were one string ("<reason>\\n\\nlog: <path>\\n--- last
lines of the log ---\\n<tail>") in requests.failure_reason and request_history.reason; stored rows are split.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOG = "\n\nlog: "
TAIL = "\n--- last lines of the log ---\n"


def split(glued: str) -> tuple[str, str | None, str | None]:
    """(reason, log path, log tail) of a failure stored as one string."""
    reason, found, log = glued.partition(LOG)
    if not found:
        return glued, None, None
    path, _, tail = log.partition(TAIL)
    return reason, path or None, tail or None


def upgrade() -> None:
    op.add_column("requests", sa.Column("failure_log_path", sa.Text(), nullable=True))
    op.add_column("requests", sa.Column("failure_log_tail", sa.Text(), nullable=True))
    op.add_column("request_history", sa.Column("log_path", sa.Text(), nullable=True))
    op.add_column("request_history", sa.Column("log_tail", sa.Text(), nullable=True))
    conn = op.get_bind()
    for table, reason_column, path_column, tail_column in (
        ("requests", "failure_reason", "failure_log_path", "failure_log_tail"),
        ("request_history", "reason", "log_path", "log_tail"),
    ):
        rows = sa.table(
            table, sa.column("id"), sa.column(reason_column), sa.column(path_column), sa.column(tail_column)
        )
        glued = conn.execute(
            sa.select(rows.c.id, rows.c[reason_column]).where(rows.c[reason_column].contains(LOG))
        ).all()
        for row_id, text in glued:
            reason, path, tail = split(text)
            conn.execute(
                sa.update(rows)
                .where(rows.c.id == row_id)
                .values({reason_column: reason, path_column: path, tail_column: tail})
            )


def downgrade() -> None:
    conn = op.get_bind()
    for table, reason_column, path_column, tail_column in (
        ("requests", "failure_reason", "failure_log_path", "failure_log_tail"),
        ("request_history", "reason", "log_path", "log_tail"),
    ):
        rows = sa.table(
            table, sa.column("id"), sa.column(reason_column), sa.column(path_column), sa.column(tail_column)
        )
        for row_id, reason, path, tail in conn.execute(
            sa.select(rows.c.id, rows.c[reason_column], rows.c[path_column], rows.c[tail_column]).where(
                rows.c[path_column].is_not(None)
            )
        ).all():
            glued = f"{reason}{LOG}{path}{TAIL}{tail or ''}"
            conn.execute(sa.update(rows).where(rows.c.id == row_id).values({reason_column: glued}))
    with op.batch_alter_table("request_history") as batch:
        batch.drop_column("log_tail")
        batch.drop_column("log_path")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("failure_log_tail")
        batch.drop_column("failure_log_path")
