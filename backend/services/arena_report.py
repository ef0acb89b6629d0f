"""Which arena voters look like abuse: a report for admins, computed from stored votes, never from anything
the client said about itself.

Each rule is named in the report with its figures: ``same-side`` (at least ``side_share`` of a voter's votes
for the same side, A or B: the names are hidden and sides are a coin toss, so an honest voter splits),
``always-tie`` (at least ``side_share`` ties), ``fast-votes`` (the median time from the last answer to the vote
under ``fast_seconds``: too fast to have read both answers) and ``shared-address`` (one client address used by
``shared_address`` voters or more). A voter needs ``min_votes`` votes for the share and speed rules to apply.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from backend.storage.arena import VoterVote

TIES = ("tie", "tie (bothbad)")


@dataclass(frozen=True)
class ReportRules:
    min_votes: int = 20
    side_share: float = 0.9
    fast_seconds: float = 3.0
    shared_address: int = 5


@dataclass(frozen=True)
class SuspiciousVoter:
    user: str
    votes: int
    share_a: float
    share_b: float
    share_tie: float
    median_seconds: float | None  # from the voted turn's last answer to the vote
    addresses: int
    reasons: tuple[str, ...]


def suspicious_voters(
    votes: Sequence[VoterVote], rules: ReportRules = ReportRules()
) -> list[SuspiciousVoter]:
    """The voters that break a rule, most votes first."""
    by_user: dict[str, list[VoterVote]] = defaultdict(list)
    voters_of: dict[str, set[str]] = defaultdict(set)
    for vote in votes:
        by_user[vote.user].append(vote)
        if vote.address is not None:
            voters_of[vote.address].add(vote.user)
    report = []
    for user, own in by_user.items():
        n = len(own)
        winners = Counter(v.winner for v in own)
        share_a, share_b = winners["model_a"] / n, winners["model_b"] / n
        share_tie = sum(winners[t] for t in TIES) / n
        delays = [(v.voted_at - v.answered_at).total_seconds() for v in own if v.answered_at is not None]
        median = statistics.median(delays) if delays else None
        addresses = {v.address for v in own if v.address is not None}
        reasons = []
        if n >= rules.min_votes:
            for side, share in (("A", share_a), ("B", share_b)):
                if share >= rules.side_share:
                    reasons.append(f"same-side: {share:.0%} of {n} votes for side {side}")
            if share_tie >= rules.side_share:
                reasons.append(f"always-tie: {share_tie:.0%} of {n} votes are ties")
            if median is not None and median < rules.fast_seconds:
                reasons.append(f"fast-votes: a median {median:.1f} s from the answers to the vote")
        crowded = max((len(voters_of[a]) for a in addresses), default=0)
        if crowded >= rules.shared_address:
            reasons.append(f"shared-address: an address used by {crowded} voters")
        if reasons:
            report.append(
                SuspiciousVoter(user, n, share_a, share_b, share_tie, median, len(addresses), tuple(reasons))
            )
    return sorted(report, key=lambda s: (-s.votes, s.user))
