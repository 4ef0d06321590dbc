"""The fast text encoder writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    Summary,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.client import RunList
from exporter.collector import NsmlCollector, Stats
from exporter.errors import HTTPStatusError
from exporter.exposition import TextEncoder
from tests.conftest import load_fixture, make_settings
from tests.test_collector import scrape


class Fixed(Collector):
    def __init__(self, *families: Metric) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def test_same_bytes_for_the_exporters_own_metrics() -> None:
    registry = scrape(load_fixture("odd_labels_page.json")["runList"], cache_seconds=3600)
    # Process readings change from one call to the next: compare one frozen reading of them.
    registry.register(Fixed(*ProcessCollector(registry=None).collect()))
    PlatformCollector(registry=registry)
    encoder = TextEncoder()
    first = encoder(registry)
    assert first == generate_latest(registry)
    # Again, now from remembered label strings.
    assert encoder(registry) == generate_latest(registry) == first
    assert b'project="back\\\\slash \\"quoted\\"\\nnewline"' in first


def test_same_bytes_for_a_failed_collection() -> None:
    def fetch(deadline: float) -> RunList:
        raise HTTPStatusError("page 1: HTTP 503 Endpoint Error")

    registry = CollectorRegistry()
    registry.register(NsmlCollector(make_settings(cache_seconds=3600), fetch, Stats()))
    failed = TextEncoder()(registry)
    assert b"nsml_up 0.0" in failed
    assert failed == generate_latest(registry)


def test_same_bytes_for_every_metric_type_and_odd_values() -> None:
    registry = CollectorRegistry()
    Counter("c", "a counter\\ with \n help", ["l"], registry=registry).labels("x").inc(3)
    Gauge("g", "gauge", ["a", "b"], registry=registry).labels("2", "1").set(1e20)
    Gauge("tiny", "tiny", registry=registry).set(1.5e-9)
    Gauge("big", "big", registry=registry).set(123456789.0)
    Gauge("inf", "inf", registry=registry).set(float("inf"))
    Gauge("nan", "nan", registry=registry).set(float("nan"))
    Histogram("h", "histogram", registry=registry).observe(0.3)
    Summary("s", "summary", registry=registry).observe(2)
    Info("i", "info", registry=registry).info({"version": "1"})
    stamped = GaugeMetricFamily("stamped", "with a timestamp", labels=["z"])
    stamped.add_metric(["v"], 1, timestamp=1700000000.5)
    registry.register(Fixed(stamped))
    assert TextEncoder()(registry) == generate_latest(registry)


def test_unusual_names_fall_back_to_prometheus_client() -> None:
    registry = CollectorRegistry()
    odd = GaugeMetricFamily("nsml.dotted.name", "utf-8 metric name", labels=["ok"])
    odd.add_metric(["1"], 1)
    plain = GaugeMetricFamily("plain", "plain", labels=["l"])
    plain.add_metric(["v"], 2)
    registry.register(Fixed(odd, plain))
    assert TextEncoder()(registry) == generate_latest(registry)


def test_label_memory_holds_only_recent_series() -> None:
    encoder = TextEncoder()
    for run in range(5):
        family = GaugeMetricFamily("g", "g", labels=["run"])
        family.add_metric([str(run)], 1)
        encoder(Fixed(family))
    assert len(encoder._previous) == 1
