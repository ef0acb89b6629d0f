"""Prometheus metrics: the queue and evaluations read from the database at scrape time (so every API
process reports the same figures), the API's own requests and errors counted in this process."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.domain import Status
from backend.errors import DatabaseUnavailable
from backend.storage.stats import StatsRepository


class DatabaseCollector(Collector):
    def __init__(self, stats: StatsRepository) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("leaderboard_database_up", "Whether the database answered this scrape.")
        try:
            by_status = self.stats.requests_by_status()
            buckets, count, total = self.stats.evaluation_durations()
        except DatabaseUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("leaderboard_requests", "Requests by status.", labels=["status"])
        for status, n in by_status.items():
            depth.add_metric([status.value], n)
        yield depth
        yield GaugeMetricFamily(
            "leaderboard_running_jobs", "Requests being evaluated now.", value=by_status[Status.RUNNING]
        )
        yield HistogramMetricFamily(
            "leaderboard_evaluation_duration_seconds",
            "How long evaluation runs took (stored results).",
            buckets=[(str(bound), n) for bound, n in buckets] + [("+Inf", count)],
            sum_value=total,
        )


class ApiMetrics:
    """One registry per API instance (tests build many)."""

    def __init__(self, stats: StatsRepository) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(stats))
        self.requests = Counter(
            "leaderboard_api_requests",
            "API requests served.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "leaderboard_api_errors", "API errors, by code.", ["code"], registry=self.registry
        )
        self.latency = Histogram(
            "leaderboard_api_request_seconds", "API request duration.", ["route"], registry=self.registry
        )
