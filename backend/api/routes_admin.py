"""What `leaderboard admin` does, over HTTP: admin tokens only."""

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, status

from backend.api.deps import Admin, Ctx, known_query_only
from backend.api.responses import ADMIN
from backend.api.routes_public import MAX_ID, RequestId
from backend.api.schemas import (
    MODEL_ID,
    MODEL_OR_NAMESPACE,
    NAMESPACE,
    BlockIn,
    FlagIn,
    ListEntryOut,
    NewTokenOut,
    ProviderIn,
    ReasonIn,
    RecoveredOut,
    RequestOut,
    SuspiciousVoterOut,
    TokenIn,
    TokenOut,
)
from backend.errors import ArenaNotConfigured
from backend.services.arena_report import ReportRules
from backend.storage.tokens import ApiToken

FlaggedModel = Annotated[str, Query(pattern=MODEL_ID, description="ORG/NAME.")]
BlockedModel = Annotated[str, Query(pattern=MODEL_OR_NAMESPACE, description="ORG/NAME or ORG/*.")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]
_RULES = ReportRules()
Days = Annotated[float, Query(gt=0, le=3650, description="Votes of the last DAYS days.")]
MinVotes = Annotated[
    int, Query(ge=1, le=MAX_ID, description="Votes a voter needs for the side, tie and speed rules to apply.")
]
SideShare = Annotated[
    float, Query(gt=0, le=1, description="Share of votes for one side (or ties) that is suspicious.")
]
FastSeconds = Annotated[
    float,
    Query(ge=0, le=86400, description="A median time from the answers to the vote under this is suspicious."),
]
SharedAddress = Annotated[
    int, Query(ge=2, le=MAX_ID, description="Voters sharing one client address that are suspicious.")
]


def _token(record: ApiToken) -> dict[str, object]:
    return {
        "id": record.id,
        "user": record.user,
        "prefix": record.prefix,
        "admin": record.is_admin,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


def build() -> APIRouter:
    router = APIRouter(
        prefix="/api/admin", tags=["admin"], responses=ADMIN, dependencies=[Depends(known_query_only)]
    )

    @router.post("/requests/{request_id}/cancel", response_model=RequestOut)
    def cancel(request_id: RequestId, body: ReasonIn, ctx: Ctx, caller: Admin) -> RequestOut:
        """Cancel a pending or running request."""
        return RequestOut.of(ctx.app.admin.cancel(request_id, caller.user, body.reason))

    @router.post("/requests/{request_id}/requeue", response_model=RequestOut)
    def requeue(request_id: RequestId, body: ReasonIn, ctx: Ctx, caller: Admin) -> RequestOut:
        """Put a failed request back in the queue."""
        return RequestOut.of(ctx.app.admin.requeue(request_id, caller.user, body.reason))

    @router.post("/recover", response_model=list[RecoveredOut])
    def recover(ctx: Ctx, caller: Admin) -> list[RecoveredOut]:
        """Return the requests of workers that stopped heart-beating to the queue now."""
        return [
            RecoveredOut(request_id=r.request_id, worker_id=r.worker_id, status=r.status)
            for r in ctx.app.queue.recover_stalled()
        ]

    @router.get("/lists/{which}", response_model=list[ListEntryOut])
    def listing(
        which: Literal["blocklist", "flags", "official-providers"], ctx: Ctx, caller: Admin
    ) -> list[ListEntryOut]:
        """The blocklist, the flagged models or the official providers."""
        return [
            ListEntryOut(key=e.key, added_by=e.added_by, added_at=e.added_at, reason=e.reason)
            for e in ctx.app.admin.listing(which)
        ]

    @router.post("/flags", status_code=status.HTTP_204_NO_CONTENT)
    def flag(body: FlagIn, ctx: Ctx, caller: Admin) -> None:
        """Flag a model (shown as flagged in the table)."""
        ctx.app.admin.flag(body.model, caller.user, body.reason)

    @router.delete("/flags", status_code=status.HTTP_204_NO_CONTENT)
    def unflag(model: FlaggedModel, ctx: Ctx, caller: Admin) -> None:
        ctx.app.admin.unflag(model)

    @router.post("/blocklist", status_code=status.HTTP_204_NO_CONTENT)
    def block(body: BlockIn, ctx: Ctx, caller: Admin) -> None:
        """Refuse submissions of a model, or of a whole namespace (ORG/*)."""
        ctx.app.admin.block(body.model, caller.user, body.reason)

    @router.delete("/blocklist", status_code=status.HTTP_204_NO_CONTENT)
    def unblock(model: BlockedModel, ctx: Ctx, caller: Admin) -> None:
        ctx.app.admin.unblock(model)

    @router.post("/official-providers", status_code=status.HTTP_204_NO_CONTENT)
    def add_provider(body: ProviderIn, ctx: Ctx, caller: Admin) -> None:
        """Exempt a namespace from the submission rate limit."""
        ctx.app.admin.add_official_provider(body.namespace, caller.user)

    @router.delete("/official-providers", status_code=status.HTTP_204_NO_CONTENT)
    def remove_provider(namespace: Annotated[str, Query(pattern=NAMESPACE)], ctx: Ctx, caller: Admin) -> None:
        ctx.app.admin.remove_official_provider(namespace)

    @router.post("/tokens", response_model=NewTokenOut, status_code=status.HTTP_201_CREATED)
    def create_token(body: TokenIn, ctx: Ctx, caller: Admin) -> NewTokenOut:
        """Issue an API token (shown once, in this response)."""
        record, token = ctx.auth.create_token(body.user, body.admin, caller.user)
        return NewTokenOut(token=token, **_token(record))

    @router.get("/tokens", response_model=list[TokenOut])
    def list_tokens(ctx: Ctx, caller: Admin) -> list[TokenOut]:
        """Every API token issued (never the tokens themselves)."""
        return [TokenOut(**_token(r)) for r in ctx.auth.tokens.all()]

    @router.delete("/tokens/{token_id}", response_model=TokenOut)
    def revoke_token(token_id: TokenId, ctx: Ctx, caller: Admin) -> TokenOut:
        """Revoke an API token: it stops working at once."""
        return TokenOut(**_token(ctx.auth.revoke_token(token_id)))

    @router.get("/arena/suspicious", response_model=list[SuspiciousVoterOut])
    def arena_suspicious(
        ctx: Ctx,
        caller: Admin,
        days: Days = 30.0,
        min_votes: MinVotes = _RULES.min_votes,
        side_share: SideShare = _RULES.side_share,
        fast_seconds: FastSeconds = _RULES.fast_seconds,
        shared_address: SharedAddress = _RULES.shared_address,
    ) -> list[SuspiciousVoterOut]:
        """The arena's voters whose votes look like abuse (`leaderboard arena suspicious`), most votes first;
        404 arena_not_configured when the deployment has no arena."""
        data = ctx.app.arena_data
        if data is None:
            raise ArenaNotConfigured()
        rules = ReportRules(min_votes, side_share, fast_seconds, shared_address)
        return [SuspiciousVoterOut(**asdict(v)) for v in data.suspicious(days, rules)]

    return router
