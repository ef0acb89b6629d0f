"""Writes by users: submissions and votes (a bearer token each; per-user rate limits)."""

from fastapi import APIRouter, Depends, status

from backend.api.deps import Ctx, User, known_query_only
from backend.api.responses import WRITE
from backend.api.routes_public import RequestId
from backend.api.schemas import RequestOut, SubmissionIn, SubmittedOut, VoteOut
from backend.domain import Submission


def build() -> APIRouter:
    router = APIRouter(tags=["submissions and votes"], dependencies=[Depends(known_query_only)])

    @router.post(
        "/api/submissions", response_model=SubmittedOut, status_code=status.HTTP_201_CREATED, responses=WRITE
    )
    def submit(body: SubmissionIn, ctx: Ctx, caller: User) -> SubmittedOut:
        """Submit a model for evaluation, as the token's user; the request comes back with the commit it was
        frozen to. A rejection names the rule that failed and how to fix it."""
        ctx.limiter.hit(caller.user, "submission")
        submission = Submission(sender=caller.user, **body.model_dump())
        request = ctx.app.submissions.submit(submission)
        out = RequestOut.of(request).model_dump()
        return SubmittedOut(**out, not_evaluated_on=ctx.app.submissions.not_evaluated_on(request))

    @router.post("/api/requests/{request_id}/vote", response_model=VoteOut, responses=WRITE)
    def vote(request_id: RequestId, ctx: Ctx, caller: User) -> VoteOut:
        """Upvote a pending request (one vote per user per request)."""
        ctx.limiter.hit(caller.user, "vote")
        return VoteOut(request_id=request_id, votes=ctx.app.votes.vote(request_id, caller.user), voted=True)

    @router.delete("/api/requests/{request_id}/vote", response_model=VoteOut, responses=WRITE)
    def unvote(request_id: RequestId, ctx: Ctx, caller: User) -> VoteOut:
        """Withdraw one's vote from a pending request."""
        ctx.limiter.hit(caller.user, "vote")
        return VoteOut(
            request_id=request_id, votes=ctx.app.votes.unvote(request_id, caller.user), voted=False
        )

    return router
