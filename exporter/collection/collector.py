"""The Prometheus side: one custom collector that serves the store of runs.

Each scrape asks the `SharedCollection` for a snapshot (concurrent scrapes share the collection in
flight). The `Reader` keeps the store current: on the scrape, or in the background for a history
too long for one. A snapshot is built from the store as the collection ends. Families are built
fresh from each snapshot, never module-level gauges, so a run that disappears from the API
disappears from `/metrics` too, and a failed collection serves no run series at all. Every value
comes from the snapshot (ages too are as of the collection's end), so scrapes served the same
collection get the same bytes.

Production does not register it in a registry: `web.exposition` asks `shared.get()` for the
snapshot and renders `families(snapshot)` once per collection and format, beside a registry of
the exporter's own live metrics. It is still a prometheus_client `Collector` (`collect()`,
`describe()`), so that it can be registered where that is the way (the in-process tests, an
application embedding it); both paths build the same families from the same snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import CollectionError
from ..selfmetrics import ExporterMetrics
from ..settings import Settings
from .details import RunDetails
from .details_families import details_families
from .health_families import health_families
from .reader import Reader, ReadFailed, ReadState, RunSource
from .shared import SharedCollection
from .snapshot import Record, Rules, Snapshot
from .store import RunStore

log = logging.getLogger(__name__)

RUN_LABELS = ["project_id", "project", "run", "run_type", "status", "creator"]
COUNT_LABELS = ["project_id", "project", "status", "run_type"]
FINISHED_LABELS = ["project_id", "project", "run_type", "status"]
#: A run created further than this in the future means TIMEZONE is wrong, not clock drift.
FUTURE_TOLERANCE = 120.0


def rules_of(settings: Settings) -> Rules:
    return Rules(
        projects=frozenset(settings.projects),
        series_statuses=frozenset(settings.run_series_statuses),
        max_run_series=settings.max_run_series,
        zone=settings.zone,
        active_statuses=frozenset(settings.active_statuses),
        duration_buckets=tuple(settings.duration_buckets),
        finished_age_buckets=tuple(settings.finished_age_buckets),
    )


class NsmlCollector(Collector):
    """`prometheus_client` collector for the NSML run list and the exporter's health."""

    def __init__(
        self,
        settings: Settings,
        source: RunSource,
        metrics: ExporterMetrics,
        wall_clock: Callable[[], float] = time.time,
        *,
        details: RunDetails | None = None,
        once: bool = False,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._now = wall_clock
        self._details = details
        self._details_in_background = not once  # --once reads them first: it has one chance
        self._rules = rules_of(settings)
        self.store = RunStore(self._rules)
        self.reader = Reader(
            settings,
            source,
            self.store,
            lambda error: metrics.count_error(error.reason),  # the reader logs its own line
            wall_clock=wall_clock,
            once=once,
        )
        if details is not None:
            details.follow(self.store, self.reader.wait_turn)
        self._statuses: dict[str, None] = dict.fromkeys(settings.known_statuses)
        self._statuses_lock = threading.Lock()
        self._warned_future = False
        self.shared = SharedCollection(
            self.collect_once,
            settings.cache_seconds,
            settings.min_interval,
            succeeded=lambda snapshot: snapshot.ok,
        )

    def start(self) -> None:
        """Start reading the run list (before the first scrape)."""
        self.reader.start()

    def close(self) -> None:
        self.reader.close()

    # -- collecting --------------------------------------------------------------------------

    def collect_once(self) -> Snapshot:
        """The store's view now. Never raises: a failure is a `Snapshot` with `ok=False`."""
        started = time.monotonic()
        try:
            state = self.reader.collect()
            if not state.complete:
                return replace(
                    self._failure(started, "the first full read is under way"), warming=True
                )
            with self._statuses_lock:
                for status in sorted(self.store.statuses()):
                    self._statuses.setdefault(status)
                statuses = list(self._statuses)
            snapshot = self.store.snapshot(
                statuses, now=self._now(), duration=time.monotonic() - started
            )
        except ReadFailed as error:  # counted and logged by the reader
            return self._failure(started, str(error))
        except Exception:
            self._metrics.count_error(CollectionError.reason)
            log.exception("collection failed (internal error)")
            return self._failure(started, "internal")
        snapshot = self._health(snapshot, state)
        if self._details is not None:
            snapshot = self._with_details(snapshot, self._details)
        log.debug(
            "collected %d runs (totalCount %d) in %.3fs, %s",
            len(self.store),
            state.total_count,
            snapshot.duration,
            state.mode,
        )
        return snapshot

    def _health(self, snapshot: Snapshot, state: ReadState) -> Snapshot:
        """`snapshot` with how the reading stands."""
        return replace(
            snapshot,
            total_count=state.total_count if state.complete else None,
            last_success=state.last_success,
            mode=state.mode,
            view_started=state.view_started,
            full_read_seconds=state.full_read_seconds,
            newest_first=state.newest_first,
            progress=state.progress,
            stored=len(self.store),
        )

    def _failure(self, started: float, error: str) -> Snapshot:
        """A failed collection: no runs, with how the reading stands."""
        failed = Snapshot(False, time.monotonic() - started, self._now(), error=error)
        return self._health(failed, self.reader.state)

    def _with_details(self, snapshot: Snapshot, details: RunDetails) -> Snapshot:
        """The snapshot with the details of its runs with series, as known now; the reads they
        still need are made after it (or first, for `--once`)."""
        series = [record.key for record in snapshot.series]
        # A run gone (404) is asked again once the run list shows it changed.
        versions = {record.key: (record.status, record.updated) for record in snapshot.series}
        if self._details_in_background:
            view = details.view(series)
            details.refresh_in_background(series, versions)
        else:
            details.refresh(series, versions)
            view = details.view(series)
        return replace(snapshot, details=view)

    # -- serving -----------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        """The families this collector serves, without touching the API."""
        yield from self.families(Snapshot(ok=True, duration=0.0, finished=0.0), describe=True)

    def collect(self) -> Iterator[Metric]:
        yield from self.families(self.shared.get())

    def families(self, snap: Snapshot, describe: bool = False) -> Iterator[Metric]:
        """The families of one collection: the same for every scrape it serves, so the web side
        renders them once per collection and format."""
        yield GaugeMetricFamily(
            "nsml_up",
            "1 if the view served is a complete read of the NSML run list (on this scrape, or in "
            "the background when the history is too long for one) and the API answers, else 0",
            value=1 if snap.ok else 0,
        )
        if snap.ok:
            yield from self._run_families(snap)
            if snap.details is not None:
                yield from details_families(snap.details, snap.series)
            yield GaugeMetricFamily(
                "nsml_run_series_omitted",
                "Runs eligible for per-run series but left out by MAX_RUN_SERIES",
                value=snap.omitted,
            )
        yield from health_families(snap, self._settings.collect_timeout, describe)

    def _run_families(self, snap: Snapshot) -> Iterator[Metric]:
        """The run list's families, for instance (labels cut short):

        nsml_runs{project="vision",run_type="TRAIN",status="RUN_STATE_COMPLETED",...} 6.0
        nsml_run_age_seconds{creator="u1",project="vision",run="12",...} 5040.0
        nsml_run_created_timestamp_seconds{...} 1.7650e+09
        nsml_run_updated_timestamp_seconds{...} 1.7650e+09
        nsml_run_duration_seconds_bucket{le="60.0",project="vision",...} 0.0
        nsml_run_duration_seconds_gcount{project="vision",...} 27.0
        nsml_run_duration_seconds_gsum{project="vision",...} 131311.0
        nsml_run_finished_age_seconds_bucket{le="3600.0",...} 2.0
        nsml_project_last_created_timestamp_seconds{project="vision",...} 1.7650e+09
        """
        runs = GaugeMetricFamily("nsml_runs", "Runs in the NSML run list", labels=COUNT_LABELS)
        for key, count in snap.counts.items():
            runs.add_metric(key, count)
        yield runs
        doc = "for runs whose status is in RUN_SERIES_STATUSES"
        age = GaugeMetricFamily(
            "nsml_run_age_seconds", f"Now minus createTime, {doc}", labels=RUN_LABELS
        )
        created = GaugeMetricFamily(
            "nsml_run_created_timestamp_seconds",
            f"createTime as Unix seconds, {doc}",
            labels=RUN_LABELS,
        )
        updated = GaugeMetricFamily(
            "nsml_run_updated_timestamp_seconds",
            f"updateTime as Unix seconds, {doc}",
            labels=RUN_LABELS,
        )
        now = snap.finished  # ages as of the collection, like every other value served from it
        for record in snap.series:
            labels = _run_labels(record)
            age.add_metric(labels, now - record.created)
            created.add_metric(labels, record.created)
            updated.add_metric(labels, record.updated)
        if snap.series and now - snap.series[-1].created < -FUTURE_TOLERANCE:
            self._warn_future(snap.series[-1], snap.series[-1].created - now)
        yield age
        yield created
        yield updated
        yield from self._finished_families(snap)

    def _finished_families(self, snap: Snapshot) -> Iterator[Metric]:
        rules = self._rules
        for name, doc, histograms, bounds in (
            (
                "nsml_run_duration_seconds",
                "updateTime minus createTime of finished runs (status not in ACTIVE_STATUSES)",
                snap.durations,
                rules.duration_buckets,
            ),
            (
                "nsml_run_finished_age_seconds",
                "Now minus updateTime of finished runs: how long ago they finished",
                snap.finished_ages,
                rules.finished_age_buckets,
            ),
        ):
            family = GaugeHistogramMetricFamily(name, doc, labels=FINISHED_LABELS)
            for key, histogram in histograms.items():
                family.add_metric(key, histogram.cumulative(bounds), histogram.total)
            yield family
        last = GaugeMetricFamily(
            "nsml_project_last_created_timestamp_seconds",
            "The newest createTime among the project's runs, Unix seconds",
            labels=["project_id", "project"],
        )
        for project, created_at in snap.last_created.items():
            last.add_metric(project, created_at)
        yield last

    def _warn_future(self, record: Record, ahead: float) -> None:
        if self._warned_future:
            return
        self._warned_future = True
        log.warning(
            "run %s of project %s was created %.0fs in the future: its times are probably not in "
            "NSML_EXPORTER_TIMEZONE (--timezone) %s; set the API's zone",
            record.run,
            record.project,
            ahead,
            self._settings.timezone,
        )


def _run_labels(record: Record) -> list[str]:
    return [
        record.project_id,
        record.project,
        record.run,
        record.run_type,
        record.status,
        record.creator,
    ]
