"""Migrations on a database holding data: every row survives, and the result matches the declared schema."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select

from backend.storage.database import Database
from backend.storage.model_metadata import ModelMetadata, ModelMetadataRepository
from backend.storage.schema import evaluations, metadata, model_metadata, publications, requests

from .conftest import new_request


def old_request(db: Database, now: datetime) -> int:
    """A request row as the first schema has it (the repository writes the newest schema's columns)."""
    new = new_request()
    with db.transaction() as conn:
        return conn.execute(
            insert(requests)
            .values(
                model=new.model, namespace=new.model.split("/")[0], revision=new.revision, sha=new.sha,
                precision=new.precision.value, weight_type=new.weight_type.value,
                model_type=new.model_type.value, use_chat_template=new.use_chat_template,
                architectures=list(new.architectures), sender=new.sender, status="PENDING", votes=1,
                attempts=0, submitted_at=now, updated_at=now,
            )
            .returning(requests.c.id)
        ).scalar_one()  # fmt: skip


def test_result_versions_migration_keeps_evaluations_and_their_publications(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.upgrade("0003")
        finished = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        request_id = old_request(db, finished)
        with db.transaction() as conn:
            evaluation_id = conn.execute(
                insert(evaluations)
                .values(
                    request_id=request_id,
                    leaderboard="open_llm_v2",
                    config_hash="c" * 64,
                    scores={"IFEval": 12.5},
                    stderrs={},
                    results={"results": {}},
                    provenance={},
                    artifacts="/runs/1",
                    attempt=1,
                    worker_id="w",
                    started_at=finished,
                    finished_at=finished,
                    duration_seconds=3.0,
                )
                .returning(evaluations.c.id)
            ).scalar_one()
            conn.execute(
                insert(publications).values(
                    evaluation_id=evaluation_id, target="/results", queued_at=finished, files=["a.json"]
                )
            )

        db.upgrade()

        with db.transaction() as conn:
            row = conn.execute(select(evaluations)).mappings().one()
            published = conn.execute(select(publications)).mappings().all()
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert (row["id"], row["version"], row["recorded_at"], row["rescored_from"]) == (
            evaluation_id,
            1,
            finished,
            None,
        )
        assert row["scores"] == {"IFEval": 12.5}
        assert [(p["evaluation_id"], p["files"]) for p in published] == [(evaluation_id, ["a.json"])]
        # The queue index is on an expression (votes DESC), which autogenerate cannot compare.
        assert [d for d in differences if getattr(d[1], "name", None) != "ix_requests_queue"] == []
    finally:
        db.dispose()


def test_leaderboard_cache_keys_migration_counts_each_stored_hub_metadata_as_one_change(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        db.upgrade("0007")
        refreshed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        with db.transaction() as conn:
            conn.execute(
                insert(model_metadata).values(
                    model="org/a", likes=3, available=True, license="mit", refreshed_at=refreshed
                )
            )
        db.upgrade()  # the row stays as it was, counted as one change
        hub = ModelMetadataRepository(db)
        assert hub.get("org/a") == ModelMetadata("org/a", 3, True, "mit", refreshed)
        assert hub.stamp() == (1, 1)
        hub.save(ModelMetadata("org/a", 4, True, "mit", refreshed))
        assert hub.stamp() == (1, 2)
    finally:
        db.dispose()
