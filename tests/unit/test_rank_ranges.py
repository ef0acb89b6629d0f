"""Rank ranges of the leaderboard page: models whose scores ± standard errors overlap share ranks."""

from __future__ import annotations

from backend.services.leaderboard import rank_ranges


def rows(*scored: tuple[float | None, float | None]) -> list[dict]:
    return [{"s": value, "s stderr": error, "name": f"m{i}"} for i, (value, error) in enumerate(scored)]


def test_separated_scores_have_one_rank_each_and_overlaps_share_a_range():
    ordered = rows((50.0, 1.0), (47.5, 1.0), (46.0, 1.0), (40.0, 0.5))
    # 47.5±1 and 46±1 overlap ([46.5, 48.5] and [45, 47]); 50±1 lies above both, 40±0.5 below all.
    assert rank_ranges(ordered, "s", "s stderr", descending=True) == [(1, 1), (2, 3), (2, 3), (4, 4)]


def test_a_chain_of_overlaps_widens_each_range_only_by_its_own_neighbours():
    ordered = rows((10.0, 1.0), (8.5, 1.0), (7.0, 1.0))
    # 10 and 8.5 overlap, 8.5 and 7 overlap, 10 and 7 do not.
    assert rank_ranges(ordered, "s", "s stderr", descending=True) == [(1, 2), (1, 3), (2, 3)]


def test_ascending_order_ranks_the_lowest_first():
    ordered = rows((1.0, 0.1), (2.0, 0.1), (2.1, 0.1))
    assert rank_ranges(ordered, "s", "s stderr", descending=False) == [(1, 1), (2, 3), (2, 3)]


def test_missing_errors_count_as_exact_and_missing_values_have_no_rank():
    ordered = rows((5.0, None), (5.0, None), (3.0, None), (None, None))
    assert rank_ranges(ordered, "s", "s stderr", descending=True) == [(1, 2), (1, 2), (3, 3), None]


def test_a_text_column_ranks_by_position():
    ordered = rows((1.0, 0.0), (2.0, 0.0))
    assert rank_ranges(ordered, "name", "name stderr", descending=False) == [(1, 1), (2, 2)]


def test_a_window_ranks_its_rows_among_all():
    ordered = rows((50.0, 1.0), (47.5, 1.0), (46.0, 1.0), (40.0, 0.5), (None, None))
    everyone = rank_ranges(ordered, "s", "s stderr", descending=True)
    assert rank_ranges(ordered, "s", "s stderr", True, slice(2, 4)) == everyone[2:4] == [(2, 3), (4, 4)]
    assert rank_ranges(ordered, "s", "s stderr", True, slice(4, 9)) == [None]


def test_the_intervals_of_a_kept_order_rank_any_subset_of_it_as_that_subset_alone():
    import random

    from backend.services.leaderboard import Intervals

    rng = random.Random(5)
    ordered = sorted(
        rows(*[(rng.uniform(0, 100), rng.uniform(0, 5)) for _ in range(300)], (None, None)),
        key=lambda r: (r["s"] is None, -(r["s"] or 0)),
    )
    kept = Intervals(ordered, "s", "s stderr", descending=True)
    subset = [r for i, r in enumerate(ordered) if i % 3 == 0 or r["s"] is None]
    for window in (slice(0, 50), slice(50, 100), slice(90, 200)):
        assert kept.ranks(subset, window) == rank_ranges(subset, "s", "s stderr", True, window)
        assert kept.ranks(ordered, window, whole=True) == rank_ranges(ordered, "s", "s stderr", True, window)
