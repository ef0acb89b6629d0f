"""The composition root: settings -> database -> repositories -> services, built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from backend.domain import EvalRequest
from backend.errors import ConfigurationError
from backend.hub.factory import model_source_from_settings
from backend.hub.interface import ModelSource
from backend.judged.config import JudgedConfig
from backend.leaderboards.config import LeaderboardConfig, load_config, load_leaderboard
from backend.publish.service import PublishReport, PublishService
from backend.publish.targets import Target, target_from_setting
from backend.retry import Backoff
from backend.services.admin import AdminService
from backend.services.arena import ArenaLimits, ArenaService
from backend.services.arena_data import ArenaDataService
from backend.services.evaluate import EvaluationService
from backend.services.leaderboard import LeaderboardService
from backend.services.queue import QueueService, RetryPolicy
from backend.services.requests_export import RequestsExportService
from backend.services.rescore import RescoreService
from backend.services.submissions import SubmissionService
from backend.services.validation import ValidationContext, validate
from backend.services.votes import VoteService
from backend.settings import Settings
from backend.storage.arena import ArenaRepository
from backend.storage.database import Database
from backend.storage.evaluations import EvaluationRepository
from backend.storage.model_metadata import ModelMetadataRepository
from backend.storage.moderation import ModerationRepository
from backend.storage.publications import PublicationRepository
from backend.storage.requests import RequestRepository
from backend.storage.votes import VoteRepository


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class App:
    settings: Settings
    db: Database
    clock: Callable[[], datetime] = utcnow
    source: ModelSource | None = field(default=None)

    @classmethod
    def open(cls, settings: Settings, source: ModelSource | None = None) -> App:
        """Connect to the configured database, bringing its schema up to date."""
        db = Database(settings.database_url, settings.database_pool_size, settings.database_max_overflow)
        db.ensure_schema()
        return cls(settings=settings, db=db, source=source)

    @cached_property
    def requests(self) -> RequestRepository:
        return RequestRepository(self.db)

    @cached_property
    def vote_repository(self) -> VoteRepository:
        return VoteRepository(self.db)

    @cached_property
    def moderation(self) -> ModerationRepository:
        return ModerationRepository(self.db)

    @cached_property
    def model_source(self) -> ModelSource:
        return self.source or model_source_from_settings(self.settings.model_store)

    @cached_property
    def validation(self) -> ValidationContext:
        return ValidationContext(self.settings, self.model_source, self.moderation, self.requests, self.clock)

    @cached_property
    def submissions(self) -> SubmissionService:
        return SubmissionService(self.validation, self.requests)

    @cached_property
    def votes(self) -> VoteService:
        return VoteService(self.vote_repository, self.clock)

    @cached_property
    def queue(self) -> QueueService:
        return QueueService(
            self.requests,
            self.vote_repository,
            self.clock,
            self.settings.lease_seconds,
            RetryPolicy(self.settings.max_attempts),
            self.settings.max_page_size,
        )

    @cached_property
    def admin(self) -> AdminService:
        return AdminService(self.requests, self.moderation, self.clock, cancel_job=self.cancel_job)

    @cached_property
    def evaluations(self) -> EvaluationRepository:
        return EvaluationRepository(self.db, self.requests)

    @cached_property
    def config(self) -> LeaderboardConfig:
        """The leaderboard the worker evaluates with (LEADERBOARD_CONFIG), with the task set it names."""
        return load_config(self.settings.config)

    @cached_property
    def judged_configs(self) -> list[JudgedConfig]:
        """The judged leaderboards served beside the benchmark one (LEADERBOARD_JUDGED), in order."""
        configs: list[JudgedConfig] = []
        for name in self.settings.judged_leaderboards:
            config = load_leaderboard(name)
            if not isinstance(config, JudgedConfig):
                raise ConfigurationError(
                    f"LEADERBOARD_JUDGED: {name} is not a judged leaderboard (kind: judged); benchmark "
                    "leaderboards go in LEADERBOARD_CONFIG"
                )
            if config.name == self.config.name or config.name in {c.name for c in configs}:
                raise ConfigurationError(f"LEADERBOARD_JUDGED: {config.name} is served twice")
            configs.append(config)
        return configs

    def glm_table(self, config: JudgedConfig) -> Path | None:
        """The length-controlled GLM's table of ``config`` from the data mirror, None when it has none
        (the fallback GLM is fitted then, and named)."""
        if config.scoring.glm_table is None or self.settings.data_mirror is None:
            return None
        from backend.judged.data import glm_table_path

        return glm_table_path(config, Path(self.settings.data_mirror))

    @cached_property
    def leaderboard(self) -> LeaderboardService[LeaderboardConfig]:
        """The table as people read it: latest result per model, in the published columns."""
        return LeaderboardService(
            self.config, self.evaluations, self.requests, self.moderation, self.model_metadata
        )

    @cached_property
    def leaderboards(self) -> dict[str, LeaderboardService[Any]]:
        """Every leaderboard's table by name: the benchmark one first, then the judged ones."""
        boards: dict[str, LeaderboardService[Any]] = {self.config.name: self.leaderboard}
        for config in self.judged_configs:
            boards[config.name] = LeaderboardService(
                config, self.evaluations, self.requests, self.moderation, self.model_metadata
            )
        return boards

    @cached_property
    def worker(self) -> EvaluationService:
        publish = self.publish_results if self.settings.publish_after_evaluation else None
        return EvaluationService(self.settings, self.queue, self.evaluations, self.clock, publish=publish)

    @cached_property
    def rescoring(self) -> RescoreService:
        return RescoreService(self.settings, self.evaluations, self.requests, self.clock, config=self.config)

    @cached_property
    def publications(self) -> PublicationRepository:
        return PublicationRepository(self.db)

    @cached_property
    def publishing(self) -> PublishService:
        return PublishService(
            self.config,
            self.publications,
            self.requests,
            self.moderation,
            self.model_metadata,
            self.requests_export,
            self.clock,
            self.judged_configs,
            arena=self.arena_data,
        )

    def results_target(self) -> Target:
        """LEADERBOARD_RESULTS, with the publish retry settings; the Hub endpoint and token come from
        HF_ENDPOINT and HF_TOKEN."""
        settings = self.settings
        retry = Backoff(
            attempts=settings.publish_retry_attempts,
            base_s=settings.publish_retry_base_seconds,
            max_s=settings.publish_retry_max_seconds,
        )
        return target_from_setting(settings.results, retry=retry)

    def publish_results(self) -> PublishReport:
        """Publish everything not yet published to LEADERBOARD_RESULTS (raises PublishFailed)."""
        return self.publishing.publish(self.results_target())

    @cached_property
    def requests_export(self) -> RequestsExportService:
        imported = replace(self.validation, rate_limits=False)
        return RequestsExportService(
            self.requests, self.vote_repository, self.clock, validate=lambda sub: validate(sub, imported)
        )

    @cached_property
    def model_metadata(self) -> ModelMetadataRepository:
        """The Hub metadata (likes, availability, license) the scheduler refreshes."""
        return ModelMetadataRepository(self.db)

    @cached_property
    def arena(self) -> ArenaService | None:
        """The arena of LEADERBOARD_ARENA (None when unset): its static battles from a judged leaderboard this
        deployment serves, its live ones from the models' endpoints."""
        if self.settings.arena is None:
            return None
        from backend.arena.config import load_arena
        from backend.arena.pairing import PairingWeights
        from backend.services.arena_static import StaticAnswers

        config = load_arena(self.settings.arena)
        static = None
        if config.static_from is not None:
            board = self.leaderboards.get(config.static_from)
            if board is None:
                raise ConfigurationError(
                    f"LEADERBOARD_ARENA: {config.name}'s static battles come from the judged leaderboard "
                    f"{config.static_from}, which this deployment does not serve: add it to LEADERBOARD_JUDGED"
                )
            static = StaticAnswers(board)
        settings = self.settings
        secret = settings.session_secret.get_secret_value() if settings.session_secret else ""
        streamer = None
        if config.models:  # an arena of static battles only needs no endpoint
            from backend.arena.endpoints import ArenaEndpoints

            streamer = ArenaEndpoints(config, settings)
        return ArenaService(
            config,
            ArenaRepository(self.db),
            self.clock,
            streamer=streamer,
            static=static,
            limits=ArenaLimits(
                daily_votes=settings.arena_daily_votes,
                max_turns=settings.arena_max_turns,
                max_prompt_chars=settings.arena_max_prompt_chars,
                ratings_seconds=settings.arena_ratings_seconds,
            ),
            pairing=PairingWeights(settings.arena_few_battles_weight, settings.arena_close_rating_weight),
            address_key=("arena-address:" + secret).encode(),
        )

    @cached_property
    def arena_data(self) -> ArenaDataService | None:
        """The arena's battles out and in (export, import, the voters report, publishing); None without an
        arena."""
        arena = self.arena
        return None if arena is None else ArenaDataService(arena, self.clock)

    def cancel_job(self, request: EvalRequest) -> None:
        """Stop the executor job of a request that was running (scancel for a Slurm job)."""
        from backend.executors.factory import cancel_job

        cancel_job(self.settings, request)

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
