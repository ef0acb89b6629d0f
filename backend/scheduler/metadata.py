"""Refresh the Hub metadata (likes, availability, license) of queued, running and finished models through
the model-source interface."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from backend.domain import Status
from backend.errors import ModelSourceError
from backend.hub.interface import ModelSource
from backend.storage.model_metadata import ModelMetadata, ModelMetadataRepository

log = logging.getLogger(__name__)

REFRESHED_STATUSES = frozenset({Status.PENDING, Status.RUNNING, Status.FINISHED})


class MetadataRefresher:
    def __init__(
        self,
        source: ModelSource,
        repository: ModelMetadataRepository,
        clock: Callable[[], datetime],
        max_age_seconds: float,
        batch: int = 100,
    ) -> None:
        self.source = source
        self.repository = repository
        self.clock = clock
        self.max_age = timedelta(seconds=max_age_seconds)
        self.batch = batch

    def refresh(self) -> int:
        """Refresh up to ``batch`` models whose metadata is missing or older than the refresh interval;
        returns how many. Stops at the first answer the source could not give (the Hub is down)."""
        now = self.clock()
        refreshed = 0
        for model in self.repository.due(REFRESHED_STATUSES, now - self.max_age, self.batch):
            try:
                status = self.source.model_status(model)
            except ModelSourceError as exc:
                log.warning("metadata refresh stopped", extra={"model": model, "error": exc.message})
                break
            self.repository.save(ModelMetadata(model, status.likes, status.available, status.license, now))
            if not status.available:
                log.warning("model unavailable", extra={"model": model, "reason": status.reason})
            refreshed += 1
        return refreshed
