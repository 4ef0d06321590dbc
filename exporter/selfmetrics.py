"""The exporter's own metrics: API requests by endpoint and outcome, their latency, failed
collections.

prometheus_client's `Counter` and `Histogram`, registered in the exporter's registry. Every
collection error reason starts at 0, so `rate()` and `increase()` see the first failure.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .errors import REASONS

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ExporterMetrics:
    """Made unregistered, so that the run-list collector can be registered (and served) first."""

    def __init__(self) -> None:
        self.requests = Counter(
            "nsml_api_requests",
            "NSML API requests by endpoint (runs, projects, run, nodes) and HTTP status, or "
            "timeout / connection / invalid",
            ["endpoint", "code"],
            registry=None,
        )
        self.latency = Histogram(
            "nsml_api_request_duration_seconds",
            "NSML API request latency",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.errors = Counter(
            "nsml_collection_errors", "Failed collections by reason", ["reason"], registry=None
        )
        for reason in REASONS:
            self.errors.labels(reason)

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (self.requests, self.latency, self.errors):
            registry.register(metric)

    def observe_request(self, endpoint: str, code: str, seconds: float) -> None:
        self.requests.labels(endpoint, code).inc()
        self.latency.observe(seconds)

    def count_error(self, reason: str) -> None:
        self.errors.labels(reason).inc()
