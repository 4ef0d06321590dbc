"""The Prometheus side: one custom collector that reads the run list when scraped.

Each scrape asks `SharedCollection` for a snapshot: concurrent scrapes wait for the one collection
already in flight, and `CACHE_SECONDS` lets a recent snapshot be reused. Families are built fresh
from the snapshot on every scrape (never module-level gauges), so a run that disappears from the
API disappears from `/metrics` too, and a failed collection serves no run series at all.
"""

from __future__ import annotations

import bisect
import logging
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from . import __version__
from .client import RunList
from .errors import REASONS, CollectionError, InvalidResponseError
from .models import RunRecord, to_timestamp
from .settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RUN_LABELS = ("project_id", "project", "run", "run_type", "status", "creator")
COUNT_LABELS = ("project_id", "project", "status", "run_type")
_COUNT_KEY = attrgetter("project_id", "run_type", "status")
_PROJECT = attrgetter("project_id", "project_name")
_RUN_LABEL_VALUES = attrgetter(
    "project_id", "project_name", "run_name", "run_type", "status", "creator"
)
#: A run created further than this in the future means TIMEZONE is wrong, not clock drift.
FUTURE_TOLERANCE = 120.0


class Stats:
    """The exporter's own counters: API requests by code, their latency, failed collections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def observe_request(self, code: str, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self.requests[code] += 1
            self._buckets[index] += 1
            self._latency_sum += seconds

    def count_error(self, reason: str) -> None:
        with self._lock:
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def families(self) -> Iterator[Metric]:
        with self._lock:
            requests = dict(self.requests)
            errors = dict(self.errors)
            buckets = list(self._buckets)
            latency_sum = self._latency_sum
        family = CounterMetricFamily(
            "nsml_api_requests", "NSML API requests by HTTP status or failure", labels=["code"]
        )
        for code, count in sorted(requests.items()):
            family.add_metric([code], count)
        yield family
        cumulative, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
            running += count
            cumulative.append((_le(bound), running))
        yield HistogramMetricFamily(
            "nsml_api_request_duration_seconds",
            "NSML API request latency",
            buckets=cumulative,
            sum_value=latency_sum,
        )
        family = CounterMetricFamily(
            "nsml_collection_errors", "Failed collections by reason", labels=["reason"]
        )
        for reason, count in sorted(errors.items()):
            family.add_metric([reason], count)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one collection found, reduced to what the metrics need."""

    ok: bool
    duration: float
    finished: float
    counts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    #: (run, createTime, updateTime as Unix seconds) for runs with per-run series, oldest first.
    series: tuple[tuple[RunRecord, float, float], ...] = ()
    omitted: int = 0
    total_count: int | None = None
    error: str = ""


class SharedCollection:
    """Single-flight with an optional cache: one upstream collection serves every waiting scrape."""

    def __init__(
        self,
        collect: Callable[[], Snapshot],
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collect = collect
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: threading.Event | None = None
        self._last: Snapshot | None = None
        self._last_at = 0.0

    @property
    def last(self) -> Snapshot | None:
        """The newest finished collection, if any."""
        return self._last

    def get(self) -> Snapshot:
        with self._lock:
            if (
                self._last is not None
                and self._cache_seconds > 0
                and self._clock() - self._last_at < self._cache_seconds
            ):
                return self._last
            done = self._inflight
            leader = done is None
            if leader:
                done = self._inflight = threading.Event()
        assert done is not None
        if not leader:
            done.wait()
            if self._last is None:
                raise RuntimeError("the shared collection failed unexpectedly")
            return self._last
        snapshot: Snapshot | None = None
        try:
            snapshot = self._collect()  # never raises by contract; guard the waiters anyway
        finally:
            with self._lock:
                if snapshot is not None:
                    self._last, self._last_at = snapshot, self._clock()
                self._inflight = None
            done.set()
        return snapshot


class NsmlCollector(Collector):
    """`prometheus_client` collector for the NSML run list and the exporter's own health."""

    def __init__(
        self,
        settings: Settings,
        fetch: Callable[[float], RunList],
        stats: Stats,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._fetch = fetch
        self._stats = stats
        self._now = wall_clock
        self._projects = frozenset(settings.projects)
        self._series_statuses = frozenset(settings.run_series_statuses)
        self._zone = settings.zone
        self._statuses: dict[str, None] = dict.fromkeys(settings.known_statuses)
        self._statuses_lock = threading.Lock()
        self._last_success = 0.0
        self._total_count: int | None = None
        self._warned_future = False
        self.shared = SharedCollection(self.collect_once, settings.cache_seconds)
        self._pinned = threading.local()

    # -- collecting --------------------------------------------------------------------------

    def collect_once(self) -> Snapshot:
        """Read the API now. Never raises: a failure is a `Snapshot` with `ok=False`."""
        started = time.monotonic()
        try:
            run_list = self._fetch(started + self._settings.collect_timeout)
            snapshot = self._summarize(run_list, started)
        except CollectionError as error:
            self._stats.count_error(error.reason)
            log.warning("collection failed (%s): %s", error.reason, error)
            return Snapshot(False, time.monotonic() - started, self._now(), error=str(error))
        except Exception:
            self._stats.count_error(CollectionError.reason)
            log.exception("collection failed (internal error)")
            return Snapshot(False, time.monotonic() - started, self._now(), error="internal")
        self._last_success = snapshot.finished
        self._total_count = snapshot.total_count
        log.debug(
            "collected %d runs (totalCount %d) in %.3fs",
            sum(snapshot.counts.values()),
            run_list.total_count,
            snapshot.duration,
        )
        return snapshot

    def _summarize(self, run_list: RunList, started: float) -> Snapshot:
        runs: Collection[RunRecord] = run_list.runs.values()
        if self._projects:
            wanted = self._projects
            runs = [r for r in runs if r.project_id in wanted or r.project_name in wanted]
        # (project_id, run_type, status) -> runs, counted in C.
        counts = Counter(map(_COUNT_KEY, runs))
        names = dict(map(_PROJECT, runs))  # a project's name as its last run gives it
        series_statuses = self._series_statuses
        eligible = [r for r in runs if r.status in series_statuses]
        with self._statuses_lock:
            for _, _, status in counts:
                self._statuses.setdefault(status)
            statuses = list(self._statuses)
        # Zero-fill: every (project, run type) present gets every known or ever-seen status.
        filled: dict[tuple[str, str, str, str], int] = {}
        for project_id, run_type in sorted({key[:2] for key in counts}):
            for status in statuses:
                filled[project_id, names[project_id], status, run_type] = counts.get(
                    (project_id, run_type, status), 0
                )
        # Times are parsed only for runs that get series: counting needs none.
        zone = self._zone
        timed = []
        for run in eligible:
            try:
                timed.append(
                    (run, to_timestamp(run.create_time, zone), to_timestamp(run.update_time, zone))
                )
            except (ValueError, OverflowError):  # a year the platform cannot convert
                raise InvalidResponseError(
                    f"run {run.run_name} of project {run.project_id}: createTime/updateTime "
                    "is not a valid date and time"
                ) from None
        timed.sort(key=lambda item: (item[1], item[0].project_id, item[0].run_name))
        cap = self._settings.max_run_series
        return Snapshot(
            ok=True,
            duration=time.monotonic() - started,
            finished=self._now(),
            counts=filled,
            series=tuple(timed[:cap]),
            omitted=max(0, len(timed) - cap),
            total_count=run_list.total_count,
        )

    # -- serving -----------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        """The families this collector serves, without touching the API."""
        yield from self._families(Snapshot(ok=True, duration=0.0, finished=0.0), describe=True)

    def collect(self) -> Iterator[Metric]:
        pinned: Snapshot | None = getattr(self._pinned, "snapshot", None)
        yield from self._families(pinned or self.shared.get())

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Join (or start) the shared collection now, and render this thread's scrape from it.

        The HTTP server builds one exposition at a time; without this, a scrape waiting for
        its turn would start a collection of its own instead of sharing the one in flight.
        """
        self._pinned.snapshot = self.shared.get()
        try:
            yield
        finally:
            self._pinned.snapshot = None

    def _families(self, snap: Snapshot, describe: bool = False) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "nsml_up",
            "1 if the last collection read the whole NSML run list, else 0",
            value=1 if snap.ok else 0,
        )
        if snap.ok:
            yield from self._run_families(snap)
            yield GaugeMetricFamily(
                "nsml_run_series_omitted",
                "Runs eligible for per-run series but left out by MAX_RUN_SERIES",
                value=snap.omitted,
            )
        if self._total_count is not None or describe:
            yield GaugeMetricFamily(
                "nsml_api_total_count",
                "totalCount of the last successful collection",
                value=self._total_count or 0,
            )
        yield GaugeMetricFamily(
            "nsml_scrape_duration_seconds",
            "Wall time of the last collection",
            value=snap.duration,
        )
        yield GaugeMetricFamily(
            "nsml_collect_timeout_seconds",
            "COLLECT_TIMEOUT: the longest a collection may take",
            value=self._settings.collect_timeout,
        )
        yield GaugeMetricFamily(
            "nsml_last_success_timestamp_seconds",
            "End of the last successful collection, Unix seconds (0 before the first)",
            value=self._last_success,
        )
        yield from self._stats.families()
        info = GaugeMetricFamily(
            "nsml_exporter_build_info",
            "nsml-exporter build information",
            labels=["version", "python_version"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _run_families(self, snap: Snapshot) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "nsml_runs", "Runs in the NSML run list", labels=list(COUNT_LABELS)
        )
        for key, count in snap.counts.items():
            runs.add_metric(list(key), count)
        yield runs
        doc = "for runs whose status is in RUN_SERIES_STATUSES"
        age = GaugeMetricFamily(
            "nsml_run_age_seconds", f"Now minus createTime, {doc}", labels=list(RUN_LABELS)
        )
        created = GaugeMetricFamily(
            "nsml_run_created_timestamp_seconds",
            f"createTime as Unix seconds, {doc}",
            labels=list(RUN_LABELS),
        )
        updated = GaugeMetricFamily(
            "nsml_run_updated_timestamp_seconds",
            f"updateTime as Unix seconds, {doc}",
            labels=list(RUN_LABELS),
        )
        now = self._now()
        # What add_metric does, with one label dict shared by a run's three samples (nothing
        # mutates a sample's labels): 3,000 samples at 10,000 runs.
        ages, creations, updates = age.samples, created.samples, updated.samples
        names = age.name, created.name, updated.name
        for run, created_at, updated_at in snap.series:
            labels = dict(zip(RUN_LABELS, _RUN_LABEL_VALUES(run), strict=True))
            ages.append(Sample(names[0], labels, now - created_at))
            creations.append(Sample(names[1], labels, created_at))
            updates.append(Sample(names[2], labels, updated_at))
        if snap.series and now - snap.series[-1][1] < -FUTURE_TOLERANCE:
            self._warn_future(snap.series[-1][0], snap.series[-1][1] - now)
        yield age
        yield created
        yield updated

    def _warn_future(self, run: RunRecord, ahead: float) -> None:
        if self._warned_future:
            return
        self._warned_future = True
        log.warning(
            "run %s of project %s was created %.0fs in the future: its times are probably not in "
            "NSML_EXPORTER_TIMEZONE (--timezone) %s; set the API's zone",
            run.run_name,
            run.project_name,
            ahead,
            self._settings.timezone,
        )
