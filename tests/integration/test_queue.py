"""The queue on a real database (SQLite and PostgreSQL): transitions, claims, leases, votes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backend.domain import Precision, Status
from backend.errors import (
    AlreadySubmitted,
    AlreadyVoted,
    IllegalTransition,
    LeaseLost,
    NotVoted,
    RateLimitReached,
    RequestNotFound,
    SubmissionRejected,
    VotingClosed,
)
from backend.storage.evaluations import Evaluation
from backend.storage.requests import RateLimit

from .conftest import new_request


def finish(app, request_id: int, worker_id: str):
    """Finish a run the way workers do: its result stored with the FINISHED transition."""
    now = app.clock()
    app.evaluations.store_and_finish(
        Evaluation(
            request_id=request_id,
            leaderboard="open_llm_v2",
            config_hash="c" * 64,
            scores={},
            stderrs={},
            results={},
            provenance={},
            artifacts="attempt-1",
            attempt=1,
            worker_id=worker_id,
            started_at=now,
            finished_at=now,
            duration_seconds=0.0,
        ),
        now,
    )
    return app.requests.get(request_id)


def test_create_stores_request_history_and_the_submitters_vote(app, clock):
    request = app.requests.create(new_request(sender="alice"), clock(), None)
    assert request.status is Status.PENDING
    assert request.votes == 1
    detail = app.queue.detail(request.id)
    assert detail.voters == ("alice",)
    assert [(h.from_status, h.to_status, h.actor) for h in detail.history] == [
        (None, Status.PENDING, "alice")
    ]


def test_second_active_request_for_same_model_sha_precision_is_refused(app, clock):
    first = app.requests.create(new_request(), clock(), None)
    with pytest.raises(AlreadySubmitted) as caught:
        app.requests.create(new_request(), clock(), None)
    assert caught.value.request_id == first.id
    assert caught.value.rule == "duplicate"
    # Another precision or another commit is a different request.
    app.requests.create(new_request(precision=Precision.FLOAT16), clock(), None)
    app.requests.create(new_request(sha="b" * 40), clock(), None)


def test_cancelled_request_may_be_submitted_again(app, clock):
    first = app.requests.create(new_request(), clock(), None)
    app.admin.cancel(first.id, "admin")
    second = app.requests.create(new_request(), clock(), None)
    assert second.id != first.id


def test_pending_queue_is_ranked_by_votes_then_submission_time(app, clock):
    ids = []
    for i in range(4):
        ids.append(app.requests.create(new_request(model=f"org/m{i}"), clock(), None).id)
        clock.advance(1)
    app.votes.vote(ids[2], "bob")
    app.votes.vote(ids[2], "carol")
    app.votes.vote(ids[3], "bob")
    ranked = [r.id for r in app.queue.page(Status.PENDING)]
    assert ranked == [ids[2], ids[3], ids[0], ids[1]]
    assert [r.id for r in app.queue.page(Status.PENDING, limit=2, offset=1)] == [ids[3], ids[0]]
    claimed = app.queue.claim("w1")
    assert claimed is not None and claimed.id == ids[2]


def test_full_lifecycle_writes_one_history_row_per_transition(app, clock):
    request = app.requests.create(new_request(), clock(), None)
    claimed = app.queue.claim("worker-1")
    assert claimed.id == request.id and claimed.status is Status.RUNNING and claimed.attempts == 1
    assert claimed.worker_id == "worker-1" and claimed.started_at == clock()
    finished = finish(app, request.id, "worker-1")
    assert finished.status is Status.FINISHED and finished.worker_id is None
    history = app.requests.history(request.id)
    assert [(h.from_status, h.to_status, h.actor) for h in history] == [
        (None, Status.PENDING, "alice"),
        (Status.PENDING, Status.RUNNING, "worker-1"),
        (Status.RUNNING, Status.FINISHED, "worker-1"),
    ]


@pytest.mark.parametrize(
    "setup, action",
    [
        ("finished", lambda app, rid: app.admin.requeue(rid, "admin")),
        ("finished", lambda app, rid: app.admin.cancel(rid, "admin")),
        ("pending", lambda app, rid: finish(app, rid, "worker-1")),
        ("pending", lambda app, rid: app.admin.requeue(rid, "admin")),
        ("cancelled", lambda app, rid: app.admin.cancel(rid, "admin")),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(app, clock, setup, action):
    request = app.requests.create(new_request(), clock(), None)
    if setup == "finished":
        app.queue.claim("worker-1")
        finish(app, request.id, "worker-1")
    elif setup == "cancelled":
        app.admin.cancel(request.id, "admin")
    before = app.requests.get(request.id)
    history_before = app.requests.history(request.id)
    with pytest.raises((IllegalTransition, LeaseLost)):
        action(app, request.id)
    assert app.requests.get(request.id) == before
    assert app.requests.history(request.id) == history_before


def test_transition_of_unknown_request_is_not_found(app):
    with pytest.raises(RequestNotFound):
        app.admin.cancel(12345, "admin")


def test_only_the_lease_holder_may_finish_or_heartbeat(app, clock):
    request = app.requests.create(new_request(), clock(), None)
    app.queue.claim("worker-1")
    with pytest.raises(LeaseLost):
        finish(app, request.id, "worker-2")
    with pytest.raises(LeaseLost):
        app.queue.heartbeat(request.id, "worker-2")
    app.queue.heartbeat(request.id, "worker-1")


def test_worker_whose_heartbeat_stops_loses_its_lease_and_the_request_is_claimable_again(app, clock):
    request = app.requests.create(new_request(), clock(), None)
    app.queue.claim("worker-1")
    clock.advance(30)
    app.queue.heartbeat(request.id, "worker-1")  # alive: lease renewed
    clock.advance(59)
    assert app.queue.recover_stalled() == []  # still within the lease
    clock.advance(2)
    recovered = app.queue.recover_stalled()
    assert [(r.request_id, r.worker_id, r.status) for r in recovered] == [
        (request.id, "worker-1", Status.PENDING)
    ]
    again = app.requests.get(request.id)
    assert again.status is Status.PENDING and again.attempts == 1 and again.worker_id is None
    with pytest.raises(LeaseLost):
        app.queue.heartbeat(request.id, "worker-1")
    reclaimed = app.queue.claim("worker-2")
    assert reclaimed.id == request.id and reclaimed.attempts == 2
    history = app.requests.history(request.id)
    assert history[2].actor == "recovery" and "stopped heart-beating" in history[2].reason


def test_lost_worker_after_the_last_attempt_fails_the_request(app, clock):
    request = app.requests.create(new_request(), clock(), None)
    for _ in range(3):
        app.queue.claim("w")
        clock.advance(61)
        recovered = app.queue.recover_stalled()
    assert recovered[0].status is Status.FAILED
    failed = app.queue.page(Status.FAILED)
    assert [r.id for r in failed] == [request.id]
    assert "gave up after 3 attempts" in failed[0].failure_reason


def test_transient_failures_are_retried_and_permanent_ones_fail_with_their_reason(app, clock):
    transient = app.requests.create(new_request(model="org/a"), clock(), None)
    permanent = app.requests.create(new_request(model="org/b"), clock(), None)
    app.queue.claim("w")
    retried = app.queue.fail(transient.id, "w", "CUDA out of memory", transient=True)
    assert retried.status is Status.PENDING and retried.failure_reason is None
    clock.advance(1)
    nxt = app.queue.claim("w")
    assert nxt.id == transient.id  # same votes, earlier submission
    finish(app, nxt.id, "w")
    app.queue.claim("w")
    failed = app.queue.fail(permanent.id, "w", "safetensors file is corrupted", transient=False)
    assert failed.status is Status.FAILED
    assert app.queue.page(Status.FAILED)[0].failure_reason == "safetensors file is corrupted"
    requeued = app.admin.requeue(permanent.id, "admin")
    assert requeued.status is Status.PENDING and requeued.failure_reason is None


def test_requeue_is_refused_when_the_model_was_submitted_again_meanwhile(app, clock):
    first = app.requests.create(new_request(), clock(), None)
    app.queue.claim("w")
    app.queue.fail(first.id, "w", "broken", transient=False)
    app.requests.create(new_request(), clock(), None)
    with pytest.raises(AlreadySubmitted):
        app.admin.requeue(first.id, "admin")
    assert app.requests.get(first.id).status is Status.FAILED


def test_cancel_takes_the_lease_from_a_running_worker(app, clock):
    request = app.requests.create(new_request(), clock(), None)
    app.queue.claim("w")
    app.admin.cancel(request.id, "admin", "withdrawn by the author")
    with pytest.raises(LeaseLost):
        app.queue.heartbeat(request.id, "w")
    assert app.requests.get(request.id).status is Status.CANCELLED


def test_votes_one_per_user_and_only_while_pending(app, clock):
    request = app.requests.create(new_request(sender="alice"), clock(), None)
    assert app.votes.vote(request.id, "bob") == 2
    with pytest.raises(AlreadyVoted, match="bob has already voted for request"):
        app.votes.vote(request.id, "bob")
    with pytest.raises(AlreadyVoted):
        app.votes.vote(request.id, "alice")  # the submitter's own vote was cast on submit
    assert app.votes.unvote(request.id, "bob") == 1
    with pytest.raises(NotVoted):
        app.votes.unvote(request.id, "bob")
    assert app.requests.get(request.id).votes == 1
    with pytest.raises(RequestNotFound):
        app.votes.vote(999, "bob")
    app.queue.claim("w")
    with pytest.raises(VotingClosed):
        app.votes.vote(request.id, "carol")
    assert app.requests.get(request.id).votes == 1


def test_rate_limit_is_enforced_inside_the_insert(app, clock):
    limit = RateLimit(count=2, since=clock.now.replace(year=2025), window_days=7)
    app.requests.create(new_request(model="org/a"), clock(), limit)
    app.requests.create(new_request(model="org/b"), clock(), limit)
    clock.advance(3600)
    with pytest.raises(RateLimitReached) as caught:
        app.requests.create(new_request(model="org/c"), clock(), limit)
    # The repository states the fact; the error words the rule, its fix and when the window frees.
    reached = caught.value
    assert (reached.namespace, reached.count, reached.limit, reached.window_days) == ("org", 2, 2, 7)
    assert reached.frees_at == clock.now - timedelta(seconds=3600) + timedelta(days=7)
    assert isinstance(reached, SubmissionRejected) and reached.rule == "rate-limit"
    assert "namespace 'org' already has 2 submissions in the last 7 days (limit 2)" in reached.message
    assert reached.fix.startswith("wait until 2026-01-08 12:00:00 UTC")
    app.requests.create(new_request(model="other/c"), clock(), limit)
