"""Alembic environment: runs on the connection Database.upgrade() hands over, or on a URL for
`alembic revision --autogenerate` during development."""

from alembic import context
from sqlalchemy import create_engine

from backend.storage.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///dev-migrations.db")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
