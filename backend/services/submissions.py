"""Submitting a model: validate, then store the request with the submitter's own vote."""

from __future__ import annotations

import logging
from pathlib import Path

from backend.domain import EvalRequest, Submission
from backend.errors import InvalidInput
from backend.judged.config import JUDGED_NEEDS_CHAT_TEMPLATE
from backend.services.validation import ValidationContext, validate
from backend.storage.requests import RequestRepository

log = logging.getLogger(__name__)


def check_user(user: str) -> str:
    user = (user or "").strip()
    if not user or len(user) > 100 or any(c.isspace() for c in user):
        raise InvalidInput("user must be a Hub user name: 1 to 100 characters, no spaces (pass --user NAME)")
    return user


class SubmissionService:
    def __init__(self, ctx: ValidationContext, requests: RequestRepository) -> None:
        self.ctx = ctx
        self.requests = requests

    def not_evaluated_on(self, request: EvalRequest) -> dict[str, str]:
        """The deployment's judged leaderboards ``request`` will not be evaluated on, each with the rule
        and the fix (a submission without its chat template is on the benchmark leaderboard only)."""
        if request.use_chat_template:
            return {}
        return {Path(name).stem: JUDGED_NEEDS_CHAT_TEMPLATE for name in self.ctx.settings.judged_leaderboards}

    def submit(self, sub: Submission) -> EvalRequest:
        check_user(sub.sender)
        new = validate(sub, self.ctx)
        # The rate limit and the duplicate check run again inside the insert's transaction: the
        # checks above were early answers, these are the authoritative ones.
        request = self.requests.create(new, self.ctx.clock(), self.ctx.rate_limit(sub.model))
        log.info(
            "request submitted",
            extra={
                "request_id": request.id,
                "model": request.model,
                "sha": request.sha,
                "status": request.status,
            },
        )
        return request
