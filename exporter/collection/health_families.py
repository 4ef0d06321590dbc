"""The families that say how the run list is read: the view's age and mode, the progress of the
full read under way, timings, totalCount and the build. Served for every collection, failed or
not (`nsml_up` itself is the collector's first family).

    nsml_api_reported_runs 30000.0
    nsml_scrape_duration_seconds 0.0021
    nsml_collect_timeout_seconds 9.0
    nsml_last_success_timestamp_seconds 1.7650e+09
    nsml_collection_mode{mode="scrape"} 0.0
    nsml_collection_mode{mode="background"} 1.0
    nsml_view_warming 0.0
    nsml_full_read_progress_ratio 0.42
    nsml_store_runs 30000.0
    nsml_view_age_seconds 61.3
    nsml_full_read_duration_seconds 24.9
    nsml_run_list_newest_first 1.0
    nsml_exporter_build_info{python_version="3.13.13",revision="g1a2b3c4",version="0.3.0"} 1.0
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from .. import __revision__, __version__
from .reader import MODES
from .snapshot import Snapshot


def health_families(snap: Snapshot, collect_timeout: float, describe: bool) -> Iterator[Metric]:
    if snap.total_count is not None or describe:
        yield GaugeMetricFamily(
            "nsml_api_reported_runs",
            "totalCount of the last successful collection",
            value=snap.total_count or 0,
        )
    yield GaugeMetricFamily(
        "nsml_scrape_duration_seconds", "Wall time of the last collection", value=snap.duration
    )
    yield GaugeMetricFamily(
        "nsml_collect_timeout_seconds",
        "COLLECT_TIMEOUT: the longest a collection on scrape may take",
        value=collect_timeout,
    )
    yield GaugeMetricFamily(
        "nsml_last_success_timestamp_seconds",
        "End of the last complete full read of the run list, Unix seconds (0 before the first); "
        "reads of the list's head and of run details never move it",
        value=snap.last_success,
    )
    mode = GaugeMetricFamily(
        "nsml_collection_mode",
        "1 for how the run list is read now: on each scrape (scrape), or in the background "
        "because a full read does not fit COLLECT_TIMEOUT (background)",
        labels=["mode"],
    )
    for name in MODES:
        mode.add_metric([name], 1 if snap.mode == name else 0)
    yield mode
    yield GaugeMetricFamily(
        "nsml_view_warming",
        "1 while the first full read of the run list is under way (no view to serve yet)",
        value=1 if snap.warming else 0,
    )
    yield GaugeMetricFamily(
        "nsml_full_read_progress_ratio",
        "Share of the full read under way that has been read (0 between full reads); while "
        "nsml_view_warming is 1, how far warming has got",
        value=snap.progress,
    )
    yield GaugeMetricFamily(
        "nsml_store_runs",
        "Runs in the exporter's store of runs (every project, before the PROJECTS filter)",
        value=snap.stored,
    )
    if snap.view_started or describe:
        yield GaugeMetricFamily(
            "nsml_view_age_seconds",
            "Seconds since the last complete full read of the run list began: deletions can be "
            "this far behind (new runs come from the list's head when it is newest first, and "
            "status changes of runs with series from their details)",
            value=max(0.0, snap.finished - snap.view_started),
        )
        yield GaugeMetricFamily(
            "nsml_full_read_duration_seconds",
            "Wall time of the last complete full read of the run list",
            value=snap.full_read_seconds,
        )
    if snap.newest_first is not None or describe:
        yield GaugeMetricFamily(
            "nsml_run_list_newest_first",
            "1 if the last full read found the run list newest first (new runs are then read "
            "from its head on each scrape), else 0",
            value=1 if snap.newest_first else 0,
        )
    info = GaugeMetricFamily(
        "nsml_exporter_build_info",
        "nsml-exporter build information",
        labels=["version", "revision", "python_version"],
    )
    info.add_metric([__version__, __revision__, platform.python_version()], 1)
    yield info
