"""Many processes at once against one database: claims are exclusive, vote counts exact."""

from __future__ import annotations

import multiprocessing
from collections import Counter

from backend.domain import Status

from .concurrent_workers import cast_votes, claim_until_empty
from .conftest import new_request

WORKERS = 8


def test_eight_processes_claim_two_hundred_requests_each_exactly_once(app, clock, database_url):
    ids = {app.requests.create(new_request(model=f"org/m{i:03d}"), clock(), None).id for i in range(200)}
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    barrier = manager.Barrier(WORKERS)
    with context.Pool(WORKERS) as pool:
        results = pool.starmap(
            claim_until_empty, [(database_url, f"worker-{n}", barrier) for n in range(WORKERS)]
        )
    manager.shutdown()
    claimed = [request_id for result in results for request_id in result]
    assert len(claimed) == 200
    assert set(claimed) == ids  # every request claimed, none twice
    assert sum(1 for result in results if result) >= 2  # the claims really were concurrent
    running = app.queue.page(Status.RUNNING, limit=500)
    assert len(running) == 200
    holders = {r.id: r.worker_id for r in running}
    for n, result in enumerate(results):
        assert all(holders[request_id] == f"worker-{n}" for request_id in result)
    assert app.queue.claim("late-worker") is None


def test_thousand_concurrent_votes_from_a_hundred_users_are_counted_exactly(app, clock, database_url):
    requests = [
        app.requests.create(new_request(model=f"org/m{i}", sender="submitter"), clock(), None).id
        for i in range(10)
    ]
    users = [f"user{u:03d}" for u in range(100)]
    ballots = [(request_id, user) for user in users for request_id in requests]  # 1,000 distinct votes
    doubles = [(requests[u % 10], user) for u, user in enumerate(users)]  # each user votes once more
    everything = ballots + doubles
    chunks = [everything[n::WORKERS] for n in range(WORKERS)]
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    barrier = manager.Barrier(WORKERS)
    with context.Pool(WORKERS) as pool:
        results = pool.starmap(cast_votes, [(database_url, chunk, barrier) for chunk in chunks])
    manager.shutdown()
    accepted = sum(a for a, _ in results)
    rejected = [message for _, messages in results for message in messages]
    assert accepted == 1000
    assert len(rejected) == 100
    assert all("has already voted for request" in m and "one vote per request" in m for m in rejected)
    per_request = Counter(v.request_id for v in app.vote_repository.all_votes())
    for request_id in requests:
        stored = app.requests.get(request_id)
        assert stored.votes == 101  # 100 users + the submitter
        assert per_request[request_id] == 101
