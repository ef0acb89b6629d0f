"""Storage: the database, its schema and migrations, and repositories over them (SQLAlchemy Core)."""
