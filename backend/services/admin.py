"""What admins do: cancel and requeue requests, flag models, keep the blocklist and official providers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from backend.domain import REPO_ID_RE, EvalRequest, Status
from backend.errors import InvalidInput
from backend.storage.moderation import ListEntry, ModerationRepository
from backend.storage.requests import RequestRepository


def _model_id(model: str, allow_namespace: bool = False) -> str:
    if allow_namespace and model.endswith("/*") and REPO_ID_RE.match(model[:-2] + "/x"):
        return model
    if not REPO_ID_RE.match(model):
        accepted = "ORG/NAME or ORG/*" if allow_namespace else "ORG/NAME"
        raise InvalidInput(f"'{model}' is not a model id: give {accepted}")
    return model


class AdminService:
    def __init__(
        self,
        requests: RequestRepository,
        moderation: ModerationRepository,
        clock: Callable[[], datetime],
        cancel_job: Callable[[EvalRequest], None] | None = None,
    ) -> None:
        """``cancel_job`` stops the job of a request that was running (scancel for a Slurm job); a local run
        is stopped by its scheduler, which sees the lease gone."""
        self.requests = requests
        self.moderation = moderation
        self.clock = clock
        self.cancel_job = cancel_job

    def cancel(self, request_id: int, actor: str, reason: str | None = None) -> EvalRequest:
        before = self.requests.get(request_id)
        cancelled = self.requests.transition(
            request_id,
            Status.CANCELLED,
            actor=actor,
            reason=reason or "cancelled by an admin",
            now=self.clock(),
        )
        if self.cancel_job is not None and before.status is Status.RUNNING:
            self.cancel_job(before)
        return cancelled

    def requeue(self, request_id: int, actor: str, reason: str | None = None) -> EvalRequest:
        """Put a failed request back in the queue (its attempt count is kept)."""
        return self.requests.transition(
            request_id,
            Status.PENDING,
            actor=actor,
            reason=reason or "requeued by an admin",
            now=self.clock(),
            allowed_from=frozenset({Status.FAILED}),
            values={"failure_reason": None},
        )

    def flag(self, model: str, actor: str, reason: str) -> None:
        self.moderation.flags.add(_model_id(model), actor, self.clock(), reason)

    def unflag(self, model: str) -> None:
        self.moderation.flags.remove(_model_id(model))

    def block(self, model: str, actor: str, reason: str) -> None:
        self.moderation.blocklist.add(_model_id(model, allow_namespace=True), actor, self.clock(), reason)

    def unblock(self, model: str) -> None:
        self.moderation.blocklist.remove(_model_id(model, allow_namespace=True))

    def add_official_provider(self, namespace: str, actor: str) -> None:
        _model_id(namespace + "/x")
        self.moderation.official_providers.add(namespace, actor, self.clock())

    def remove_official_provider(self, namespace: str) -> None:
        self.moderation.official_providers.remove(namespace)

    def listing(self, which: str) -> list[ListEntry]:
        lists = {
            "blocklist": self.moderation.blocklist,
            "flags": self.moderation.flags,
            "official-providers": self.moderation.official_providers,
        }
        return lists[which].entries()
