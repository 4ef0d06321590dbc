"""The Prometheus side: one custom collector that serves the run list's view.

Each scrape asks the `SharedCollection` for a snapshot (concurrent scrapes share the collection in
flight); `History` reads the run list for it, on the scrape or in the background. Families are
built fresh from each snapshot, never module-level gauges, so a run that disappears from the API
disappears from `/metrics` too, and a failed collection serves no run series at all. Every value
comes from the snapshot (ages too are as of the collection's end), so scrapes served the same
collection get the same bytes.
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
from ..nsml.models import Run
from ..nsml.paging import run_key
from ..selfmetrics import ExporterMetrics
from ..settings import Settings
from .details import RunDetails
from .details_families import details_families
from .health_families import health_families
from .history import History, ReadFailed, RunSource
from .shared import SharedCollection
from .snapshot import Rules, Snapshot

log = logging.getLogger(__name__)

RUN_LABELS = ["project_id", "project", "run", "run_type", "status", "creator"]
COUNT_LABELS = ["project_id", "project", "status", "run_type"]
FINISHED_LABELS = ["project_id", "project", "run_type", "status"]
#: A run created further than this in the future means TIMEZONE is wrong, not clock drift.
FUTURE_TOLERANCE = 120.0


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
        self._rules = Rules(
            projects=frozenset(settings.projects),
            series_statuses=frozenset(settings.run_series_statuses),
            max_run_series=settings.max_run_series,
            zone=settings.zone,
            active_statuses=frozenset(settings.active_statuses),
            duration_buckets=tuple(settings.duration_buckets),
            finished_age_buckets=tuple(settings.finished_age_buckets),
        )
        self.history = History(settings, source, self._rules, self._count, wall_clock, once=once)
        self._statuses: dict[str, None] = dict.fromkeys(settings.known_statuses)
        self._statuses_lock = threading.Lock()
        self._last_good: Snapshot | None = None  # written by the one collection in flight
        self._warned_future = False
        self.shared = SharedCollection(
            self.collect_once,
            settings.cache_seconds,
            settings.min_interval,
            succeeded=lambda snapshot: snapshot.ok,
        )

    # -- collecting --------------------------------------------------------------------------

    def collect_once(self) -> Snapshot:
        """The run list's view now. Never raises: a failure is a `Snapshot` with `ok=False`."""
        started = time.monotonic()
        try:
            got = self.history.collect()
            if got.tally is None:
                return replace(
                    self._failure(started, "the first full read is under way"), warming=True
                )
            with self._statuses_lock:
                for status in sorted(got.tally.statuses()):
                    self._statuses.setdefault(status)
                statuses = list(self._statuses)
            snapshot = got.tally.snapshot(
                statuses,
                duration=time.monotonic() - started,
                finished=self._now(),
                total_count=got.total_count,
            )
        except ReadFailed as error:  # counted and logged by the background read
            return self._failure(started, str(error))
        except CollectionError as error:
            self._count(error)
            return self._failure(started, str(error))
        except Exception:
            self._metrics.count_error(CollectionError.reason)
            log.exception("collection failed (internal error)")
            return self._failure(started, "internal")
        snapshot = replace(
            snapshot,
            mode=got.mode,
            view_started=got.view_started,
            full_read_seconds=got.full_read_seconds,
            newest_first=got.newest_first,
        )
        if self._details is not None:
            snapshot = self._with_details(snapshot, self._details)
        self._last_good = snapshot
        log.debug(
            "collected %d runs (totalCount %d) in %.3fs, %s",
            got.tally.runs,
            got.total_count,
            snapshot.duration,
            got.mode,
        )
        return snapshot

    def _count(self, error: CollectionError) -> None:
        """A failed read: counted by reason, one warning."""
        self._metrics.count_error(error.reason)
        log.warning("collection failed (%s): %s", error.reason, error)

    def _failure(self, started: float, error: str) -> Snapshot:
        """A failed collection, carrying the last success's totalCount, time and view."""
        last = self._last_good
        view = self.history.view
        return Snapshot(
            False,
            time.monotonic() - started,
            self._now(),
            error=error,
            total_count=None if last is None else last.total_count,
            last_success=0.0 if last is None else last.finished,
            mode=self.history.mode,
            view_started=0.0 if view is None else view.started,
            full_read_seconds=0.0 if view is None else view.seconds,
            newest_first=self.history.newest_first,
        )

    def _with_details(self, snapshot: Snapshot, details: RunDetails) -> Snapshot:
        """The snapshot with the details of its runs with series, as known now; the reads they
        still need are made after it (or first, for `--once`)."""
        series = [run_key(run) for run, _, _ in snapshot.series]
        # A run gone (404) is asked again once the run list shows it changed.
        versions = {run_key(run): (run["status"], updated) for run, _, updated in snapshot.series}
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
        for run, created_at, updated_at in snap.series:
            labels = _run_labels(run)
            age.add_metric(labels, now - created_at)
            created.add_metric(labels, created_at)
            updated.add_metric(labels, updated_at)
        if snap.series and now - snap.series[-1][1] < -FUTURE_TOLERANCE:
            self._warn_future(snap.series[-1][0], snap.series[-1][1] - now)
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

    def _warn_future(self, run: Run, ahead: float) -> None:
        if self._warned_future:
            return
        self._warned_future = True
        log.warning(
            "run %s of project %s was created %.0fs in the future: its times are probably not in "
            "NSML_EXPORTER_TIMEZONE (--timezone) %s; set the API's zone",
            run["runName"],
            run["projectName"],
            ahead,
            self._settings.timezone,
        )


def _run_labels(run: Run) -> list[str]:
    return [
        run["projectId"],
        run["projectName"],
        run["runName"],
        run.get("runType", ""),
        run["status"],
        run["creator"],
    ]
