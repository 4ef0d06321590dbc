"""The collector: what a scrape shows for a given run list."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collection.collector import NsmlCollector
from exporter.collection.details import DetailsView
from exporter.collection.details_families import details_families
from exporter.errors import HTTPStatusError
from exporter.nsml.client import NsmlClient
from exporter.selfmetrics import ExporterMetrics
from tests.fake_source import FakeSource, Runs
from tests.helpers.http import FakeAdapter
from tests.helpers.runs import api_run, run_list
from tests.helpers.settings import load_fixture, make_settings

KST = ZoneInfo("Asia/Seoul")
FINISHED_FAMILIES = (
    "nsml_run_duration_seconds",
    "nsml_run_finished_age_seconds",
    "nsml_project_last_created_timestamp_seconds",
)
NOW = datetime(2024, 9, 3, 12, 0, 0, tzinfo=KST).timestamp()


def registry_for(
    fetch: Callable[[float], Runs] | NsmlClient,
    metrics: ExporterMetrics | None = None,
    wall_clock: Callable[[], float] = lambda: NOW,
    **settings: Any,
) -> CollectorRegistry:
    """A registry as the exporter builds it: the run-list collector, then the self-metrics."""
    metrics = metrics or ExporterMetrics()
    registry = CollectorRegistry()
    source = fetch if isinstance(fetch, NsmlClient) else FakeSource(fetch)
    registry.register(NsmlCollector(make_settings(**settings), source, metrics, wall_clock))
    metrics.register(registry)
    return registry


def scrape(runs: list[dict[str, Any]], **settings: Any) -> CollectorRegistry:
    result = run_list(runs)
    return registry_for(lambda deadline: result, **settings)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class Scraped:
    """One scrape, kept: several values read from the same collection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.families = list(registry.collect())
        self.names = {f.name for f in self.families}

    def value(self, name: str, **labels: str) -> float | None:
        for family in self.families:
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None


def test_counts_by_project_status_and_type_from_the_docs_example() -> None:
    registry = scrape(load_fixture("docs_example_page.json")["runList"])
    labels = {"project_id": "******ygz0iujn******", "project": "project", "run_type": "NOTEBOOK"}
    assert value(registry, "nsml_up") == 1
    assert value(registry, "nsml_runs", status="RUN_STATE_IN_PROGRESS", **labels) == 1
    assert value(registry, "nsml_runs", status="RUN_STATE_COMPLETED", **labels) == 1
    assert value(registry, "nsml_api_reported_runs") == 2


def test_known_statuses_are_zero_filled_for_every_project_and_type_present() -> None:
    runs = [
        api_run("p1", "1", "RUN_STATE_IN_PROGRESS"),
        api_run("p2", "1", "RUN_STATE_FAILED", runType="TRAIN"),
    ]
    registry = scrape(runs)
    p1 = {"project_id": "p1", "project": "name-p1", "run_type": "NOTEBOOK"}
    p2 = {"project_id": "p2", "project": "name-p2", "run_type": "TRAIN"}
    assert value(registry, "nsml_runs", status="RUN_STATE_COMPLETED", **p1) == 0
    assert value(registry, "nsml_runs", status="RUN_STATE_COMPLETED", **p2) == 0
    assert value(registry, "nsml_runs", status="RUN_STATE_IN_PROGRESS", **p2) == 0
    # A status seen anywhere is filled everywhere; absent combinations are not invented.
    assert value(registry, "nsml_runs", status="RUN_STATE_FAILED", **p1) == 0
    assert value(registry, "nsml_runs", status="RUN_STATE_FAILED", **p2) == 1
    assert (
        value(
            registry,
            "nsml_runs",
            status="RUN_STATE_FAILED",
            project_id="p2",
            project="name-p2",
            run_type="NOTEBOOK",
        )
        is None
    )


def test_a_status_seen_once_stays_zero_filled_after_it_disappears() -> None:
    lists = iter(
        [
            run_list([api_run("p1", "1", "RUN_STATE_FAILED")]),
            run_list([api_run("p1", "1", "RUN_STATE_COMPLETED")]),
        ]
    )
    registry = registry_for(lambda d: next(lists))
    labels = {"project_id": "p1", "project": "name-p1", "run_type": "NOTEBOOK"}
    assert value(registry, "nsml_runs", status="RUN_STATE_FAILED", **labels) == 1
    assert value(registry, "nsml_runs", status="RUN_STATE_FAILED", **labels) == 0


def test_per_run_series_for_in_progress_runs_with_age_in_the_api_zone() -> None:
    runs = [
        api_run(
            "p1",
            "7",
            "RUN_STATE_IN_PROGRESS",
            created="2024-09-03 10:00:00",
            updateTime="2024-09-03 10:30:00",
            creator="alice",
        ),
        api_run("p1", "8", "RUN_STATE_COMPLETED"),
    ]
    registry = scrape(runs)
    labels = {
        "project_id": "p1",
        "project": "name-p1",
        "run": "7",
        "run_type": "NOTEBOOK",
        "status": "RUN_STATE_IN_PROGRESS",
        "creator": "alice",
    }
    created = datetime(2024, 9, 3, 1, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()  # 10:00 KST
    assert value(registry, "nsml_run_created_timestamp_seconds", **labels) == created
    assert value(registry, "nsml_run_updated_timestamp_seconds", **labels) == created + 1800
    assert value(registry, "nsml_run_age_seconds", **labels) == 2 * 3600
    completed = dict(labels, run="8", status="RUN_STATE_COMPLETED", creator="ncp-user-1")
    assert value(registry, "nsml_run_age_seconds", **completed) is None


def test_timezone_setting_changes_the_instant() -> None:
    runs = [api_run("p1", "1", "RUN_STATE_IN_PROGRESS", created="2024-09-03 10:00:00")]
    registry = scrape(runs, timezone="UTC")
    labels = {
        "project_id": "p1",
        "project": "name-p1",
        "run": "1",
        "run_type": "NOTEBOOK",
        "status": "RUN_STATE_IN_PROGRESS",
        "creator": "ncp-user-1",
    }
    # 10:00 UTC is 19:00 KST, seven hours after NOW (12:00 KST): a negative age, which is logged.
    assert value(registry, "nsml_run_age_seconds", **labels) == -7 * 3600


def test_times_across_a_dst_change_and_with_offsets() -> None:
    """Wall times in a zone with DST, a repeated hour, and times that carry their own offset."""
    new_york = ZoneInfo("America/New_York")
    cases = {
        "before": ("2024-03-10 01:30:00", datetime(2024, 3, 10, 1, 30, tzinfo=new_york)),
        "after": ("2024-03-10 03:30:00", datetime(2024, 3, 10, 3, 30, tzinfo=new_york)),
        # 01:30 happens twice on 3 November: the earlier (EDT) one is meant.
        "repeated": ("2024-11-03 01:30:00", datetime(2024, 11, 3, 5, 30, tzinfo=ZoneInfo("UTC"))),
        "offset": ("2024-09-03T10:00:00+09:00", datetime(2024, 9, 3, 1, 0, tzinfo=ZoneInfo("UTC"))),
        "zulu": ("2024-09-03T01:00:00.5Z", datetime(2024, 9, 3, 1, 0, 0, 500000, ZoneInfo("UTC"))),
    }
    runs = [
        api_run("p1", name, "RUN_STATE_IN_PROGRESS", created=text)
        for name, (text, _) in cases.items()
    ]
    registry = scrape(runs, timezone="America/New_York")
    for name, (_, expected) in cases.items():
        labels = {
            "project_id": "p1",
            "project": "name-p1",
            "run": name,
            "run_type": "NOTEBOOK",
            "status": "RUN_STATE_IN_PROGRESS",
            "creator": "ncp-user-1",
        }
        got = value(registry, "nsml_run_created_timestamp_seconds", **labels)
        assert got == expected.timestamp(), name


def test_negative_age_is_logged_once_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    runs = [api_run("p1", "1", "RUN_STATE_IN_PROGRESS", created="2024-09-03 23:00:00")]
    registry = scrape(runs)
    generate_latest(registry)
    generate_latest(registry)
    warnings = [r for r in caplog.records if "TIMEZONE" in r.getMessage()]
    assert len(warnings) == 1


def test_run_series_are_capped_keeping_the_oldest() -> None:
    runs = [
        api_run("p1", str(n), "RUN_STATE_IN_PROGRESS", created=f"2024-09-03 10:{n:02d}:00")
        for n in range(10)
    ]
    registry = scrape(runs, max_run_series=3)
    kept = {
        s.labels["run"]
        for m in registry.collect()
        if m.name == "nsml_run_age_seconds"
        for s in m.samples
    }
    assert kept == {"0", "1", "2"}
    assert value(registry, "nsml_run_series_omitted") == 7
    # The cap limits per-run series only: the counts still include every run.
    assert (
        value(
            registry,
            "nsml_runs",
            project_id="p1",
            project="name-p1",
            status="RUN_STATE_IN_PROGRESS",
            run_type="NOTEBOOK",
        )
        == 10
    )


def test_projects_filter_matches_id_or_name() -> None:
    runs = [api_run("p1", "1"), api_run("p2", "1"), api_run("p3", "1")]
    registry = scrape(runs, projects="p1,name-p3")
    seen = {
        s.labels["project_id"]
        for m in registry.collect()
        if m.name == "nsml_runs"
        for s in m.samples
    }
    assert seen == {"p1", "p3"}


def test_exposition_escapes_quotes_backslashes_newlines_and_keeps_utf8() -> None:
    registry = scrape(load_fixture("odd_labels_page.json")["runList"])
    text = generate_latest(registry).decode("utf-8")
    assert 'project="back\\\\slash \\"quoted\\"\\nnewline"' in text
    assert 'run="say \\"hi\\""' in text
    assert 'project="음성인식 팀"' in text
    assert 'creator="김민준"' in text
    # The exposition parses back to the same values.
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = {s.labels["project"] for s in families["nsml_runs"].samples}
    assert runs == {'back\\slash "quoted"\nnewline', "음성인식 팀"}


def test_full_exposition_of_a_small_list() -> None:
    registry = scrape(load_fixture("docs_example_page.json")["runList"])
    lines = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("nsml_")
        and "_bucket" not in line
        and not line.startswith(FINISHED_FAMILIES)  # their own tests below
    ]
    pid = 'project="project",project_id="******ygz0iujn******"'
    run = f'creator="ncp-user-2689076",{pid},run="2",run_type="NOTEBOOK"'
    created = datetime(2024, 9, 3, 10, 38, 21, tzinfo=KST).timestamp()
    assert lines[:9] == [
        "nsml_up 1.0",
        f'nsml_runs{{{pid},run_type="NOTEBOOK",status="RUN_STATE_IN_PROGRESS"}} 1.0',
        f'nsml_runs{{{pid},run_type="NOTEBOOK",status="RUN_STATE_COMPLETED"}} 1.0',
        f'nsml_run_age_seconds{{{run},status="RUN_STATE_IN_PROGRESS"}} {NOW - created}',
        f'nsml_run_created_timestamp_seconds{{{run},status="RUN_STATE_IN_PROGRESS"}} {created:.9e}',
        f'nsml_run_updated_timestamp_seconds{{{run},status="RUN_STATE_IN_PROGRESS"}} '
        f"{created + 90:.9e}",
        "nsml_run_series_omitted 0.0",
        "nsml_api_reported_runs 2.0",
        lines[8],
    ]
    assert lines[8].startswith("nsml_scrape_duration_seconds ")
    assert "nsml_collect_timeout_seconds 9.0" in lines


def test_a_failed_collection_serves_up_0_and_no_run_series() -> None:
    calls = iter([run_list([api_run("p1", "1", "RUN_STATE_IN_PROGRESS")])])

    def fetch(deadline: float) -> Runs:
        for item in calls:
            return item
        raise HTTPStatusError("page 1: HTTP 503 Endpoint Error")

    registry = registry_for(fetch)
    good = Scraped(registry)
    assert good.value("nsml_up") == 1
    bad = Scraped(registry)
    assert "nsml_runs" not in bad.names
    assert "nsml_run_age_seconds" not in bad.names
    assert bad.value("nsml_up") == 0
    assert bad.value("nsml_collection_errors_total", reason="http") == 1
    assert bad.value("nsml_collection_errors_total", reason="auth") == 0
    # The last success is kept, so "time since last success" alerts keep working.
    assert bad.value("nsml_last_success_timestamp_seconds") == NOW
    assert bad.value("nsml_api_reported_runs") == 1


def test_registering_calls_no_api() -> None:
    calls = []

    def fetch(deadline: float) -> Runs:
        calls.append(deadline)
        return run_list([])

    registry = CollectorRegistry(auto_describe=True)
    registry.register(NsmlCollector(make_settings(), FakeSource(fetch), ExporterMetrics()))
    assert calls == []


def test_concurrent_scrapes_share_one_collection() -> None:
    started = threading.Event()
    release = threading.Event()
    calls = 0

    def fetch(deadline: float) -> Runs:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(5)
        return run_list([api_run("p1", "1")])

    registry = registry_for(fetch)
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(generate_latest(registry)))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    started.wait(5)
    time.sleep(0.1)
    release.set()
    for thread in threads:
        thread.join(5)
    assert calls == 1
    assert len(results) == 20
    assert all(b"nsml_up 1.0" in r for r in results)


def test_cache_seconds_reuses_a_recent_collection() -> None:
    calls = 0

    def fetch(deadline: float) -> Runs:
        nonlocal calls
        calls += 1
        return run_list([])

    for cache, expected in ((0, 3), (60, 1)):
        calls = 0
        registry = registry_for(fetch, cache_seconds=cache, min_interval=0)
        for _ in range(3):
            generate_latest(registry)
        assert calls == expected


def test_request_counters_and_latency_histogram_follow_the_client() -> None:
    responses = iter(
        [
            (503, {"error": {"errorCode": 500, "message": "Endpoint Error"}}),
            (200, load_fixture("docs_example_page.json")),
        ]
    )
    metrics = ExporterMetrics()
    client = NsmlClient(
        make_settings(),
        metrics.observe_request,
        adapter=FakeAdapter(lambda page, size: next(responses)),
    )
    registry = registry_for(client, metrics)
    scraped = Scraped(registry)
    assert scraped.value("nsml_up") == 1
    assert scraped.value("nsml_api_requests_total", endpoint="runs", code="503") == 1
    assert scraped.value("nsml_api_requests_total", endpoint="runs", code="200") == 1
    assert scraped.value("nsml_api_request_duration_seconds_count") == 2


def test_last_success_stays_at_the_last_success_while_the_clock_moves_on() -> None:
    clock = [NOW]
    outcomes = iter([False, True, False, False])

    def fetch(deadline: float) -> Runs:
        if next(outcomes):
            return run_list([api_run("p1", "1")])
        raise HTTPStatusError("page 1: HTTP 503 Endpoint Error")

    registry = registry_for(fetch, wall_clock=lambda: clock[0])
    assert Scraped(registry).value("nsml_last_success_timestamp_seconds") == 0  # never yet
    clock[0] += 60
    assert Scraped(registry).value("nsml_last_success_timestamp_seconds") == NOW + 60
    for _ in range(2):
        clock[0] += 60
        failed = Scraped(registry)
        assert failed.value("nsml_up") == 0
        assert failed.value("nsml_last_success_timestamp_seconds") == NOW + 60


def test_min_interval_serves_the_last_collection_to_scrapes_that_come_sooner() -> None:
    calls = 0

    def fetch(deadline: float) -> Runs:
        nonlocal calls
        calls += 1
        return run_list([])

    registry = registry_for(fetch, min_interval=3600)
    for _ in range(5):
        assert Scraped(registry).value("nsml_up") == 1
    assert calls == 1


def histogram(registry: CollectorRegistry, name: str, **labels: str) -> dict[str, float]:
    """{le: cumulative count} of one gauge histogram's series."""
    return {
        sample.labels["le"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == f"{name}_bucket"
        and {k: v for k, v in sample.labels.items() if k != "le"} == labels
    }


def test_finished_runs_are_bucketed_by_duration_and_by_how_long_ago_they_finished() -> None:
    # NOW is 2024-09-03 12:00:00 KST.
    runs = [
        api_run("p1", "1", created="2024-09-03 10:00:00", updateTime="2024-09-03 10:00:30"),
        api_run("p1", "2", created="2024-09-03 09:00:00", updateTime="2024-09-03 11:30:00"),
        api_run(
            "p1",
            "3",
            "RUN_STATE_FAILED",
            created="2024-09-01 12:00:00",
            updateTime="2024-09-02 11:00:00",
        ),
        api_run("p1", "4", "RUN_STATE_IN_PROGRESS", created="2024-09-01 00:00:00"),
        api_run(
            "p1",
            "5",
            "RUN_STATE_PAUSED_BY_NOBODY_KNOWS",
            created="2024-09-03 11:00:00",
            updateTime="2024-09-03 11:00:00",
        ),
        api_run("p2", "1", created="2024-09-03 11:59:00", runType="TRAIN"),
    ]
    registry = scrape(runs, duration_buckets="60,3600,86400", finished_age_buckets="900,86400")
    p1 = {"project_id": "p1", "project": "name-p1", "run_type": "NOTEBOOK"}
    completed = dict(p1, status="RUN_STATE_COMPLETED")
    # Run 1 took 30 s, run 2 2.5 h; run 2 finished 30 min ago, run 1 two hours ago.
    assert histogram(registry, "nsml_run_duration_seconds", **completed) == {
        "60.0": 1,
        "3600.0": 1,
        "86400.0": 2,
        "+Inf": 2,
    }
    assert histogram(registry, "nsml_run_finished_age_seconds", **completed) == {
        "900.0": 0,
        "86400.0": 2,
        "+Inf": 2,
    }
    assert value(registry, "nsml_run_duration_seconds_gsum", **completed) == 30 + 9000
    failed = dict(p1, status="RUN_STATE_FAILED")  # 23 h long, finished 25 h ago
    assert histogram(registry, "nsml_run_duration_seconds", **failed)["86400.0"] == 1
    assert histogram(registry, "nsml_run_finished_age_seconds", **failed) == {
        "900.0": 0,
        "86400.0": 0,
        "+Inf": 1,
    }
    # A status no document lists is finished too; an active one is in neither histogram.
    odd = dict(p1, status="RUN_STATE_PAUSED_BY_NOBODY_KNOWS")
    assert histogram(registry, "nsml_run_duration_seconds", **odd)["60.0"] == 1
    active = dict(p1, status="RUN_STATE_IN_PROGRESS")
    assert histogram(registry, "nsml_run_duration_seconds", **active) == {}
    assert histogram(registry, "nsml_run_finished_age_seconds", **active) == {}
    # Each project's newest createTime, whatever the run's status.
    kst = ZoneInfo("Asia/Seoul")
    newest = {
        pid: datetime(2024, 9, 3, *hm, tzinfo=kst).timestamp()
        for pid, hm in (("p1", (11, 0)), ("p2", (11, 59)))
    }
    for pid, expected in newest.items():
        assert (
            value(
                registry,
                "nsml_project_last_created_timestamp_seconds",
                project_id=pid,
                project=f"name-{pid}",
            )
            == expected
        )


def test_active_statuses_decide_what_counts_as_finished() -> None:
    runs = [api_run("p1", "1", "RUN_STATE_PENDING")]
    labels = {"project_id": "p1", "project": "name-p1", "run_type": "NOTEBOOK"}
    pending = dict(labels, status="RUN_STATE_PENDING")
    assert histogram(scrape(runs), "nsml_run_duration_seconds", **pending)["+Inf"] == 1
    held = scrape(runs, active_statuses="RUN_STATE_IN_PROGRESS,RUN_STATE_PENDING")
    assert histogram(held, "nsml_run_duration_seconds", **pending) == {}


def test_a_failed_collection_serves_no_finished_run_families() -> None:
    def fetch(deadline: float) -> Runs:
        raise HTTPStatusError("page 1: HTTP 503 Endpoint Error")

    scraped = Scraped(registry_for(fetch))
    assert not scraped.names & {
        "nsml_run_duration_seconds",
        "nsml_run_finished_age_seconds",
        "nsml_project_last_created_timestamp_seconds",
    }


def test_a_future_run_among_past_ones_is_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    """Bug caught: the future-time check made on the oldest series (10:00) instead of the
    newest (23:00), so a wrong TIMEZONE goes unsaid whenever one older run exists; or the
    line said without the run, its project, how far ahead it is, or the zone set."""
    runs = [
        api_run("p1", "1", "RUN_STATE_IN_PROGRESS", created="2024-09-03 10:00:00"),
        api_run("p1", "2", "RUN_STATE_IN_PROGRESS", created="2024-09-03 23:00:00"),
    ]
    generate_latest(scrape(runs, timezone="Asia/Seoul"))
    warnings = [r for r in caplog.records if "TIMEZONE" in r.getMessage()]
    assert [w.getMessage() for w in warnings] == [
        "run 2 of project name-p1 was created 39600s in the future: its times are probably "
        "not in NSML_EXPORTER_TIMEZONE (--timezone) Asia/Seoul; set the API's zone"
    ]


def test_runs_within_two_minutes_ahead_are_clock_drift_not_a_timezone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = [api_run("p1", "1", "RUN_STATE_IN_PROGRESS", created="2024-09-03 12:02:00")]
    generate_latest(scrape(runs))  # NOW is 12:00:00: 120 s ahead is within the tolerance
    assert not [r for r in caplog.records if "TIMEZONE" in r.getMessage()]


def test_a_failed_collection_serves_no_omitted_count() -> None:
    """Bug caught: `nsml_run_series_omitted` served from a failed collection (as 0, a value
    the exporter does not know)."""

    def failing(deadline: float) -> Runs:
        raise HTTPStatusError("page 1: HTTP 503", status=503)

    scraped = Scraped(registry_for(failing))
    assert scraped.value("nsml_up") == 0
    assert "nsml_run_series_omitted" not in scraped.names
    assert "nsml_runs" not in scraped.names


def test_with_cache_seconds_a_failed_collection_is_not_reused() -> None:
    """Bug caught (issue 22's survivors): the collector no longer telling the shared
    collection what a success is, so a failure is served for CACHE_SECONDS."""
    answers = iter([HTTPStatusError("page 1: HTTP 503", status=503), None])

    def fetch(deadline: float) -> Runs:
        error = next(answers)
        if error is not None:
            raise error
        return run_list([api_run("p1", "1")])

    registry = registry_for(fetch, cache_seconds=60, min_interval=0)
    assert value(registry, "nsml_up") == 0
    assert value(registry, "nsml_up") == 1


def test_an_empty_list_reports_zero_runs_not_none() -> None:
    """Bug caught (issue 27): `nsml_api_reported_runs` absent for an empty list (a falsy
    totalCount taken for "not read"), so a dashboard shows "no data" for an account with no
    runs yet."""
    scraped = Scraped(scrape([]))
    assert scraped.value("nsml_up") == 1
    assert scraped.value("nsml_api_reported_runs") == 0


def test_every_error_reason_starts_at_zero_internal_included() -> None:
    """Bug caught (issue 27): `nsml_collection_errors_total{reason="internal"}` absent until
    the first bug, so `increase()` over it misses that first one."""
    from exporter.errors import CollectionError

    scraped = Scraped(scrape([api_run("p1", "1")]))
    assert CollectionError.reason == "internal"
    assert scraped.value("nsml_collection_errors_total", reason="internal") == 0


def families_text() -> str:
    """The HELP and TYPE line of every family the exporter serves about runs, their details,
    its reading and its requests (the process and platform families are prometheus_client's
    own), in the order served."""

    class Described:
        def collect(self) -> Any:
            collector = NsmlCollector(make_settings(), FakeSource(run_list_of()), ExporterMetrics())
            yield from collector.describe()
            yield from details_families(DetailsView(projects=()), [])

    registry = CollectorRegistry()
    registry.register(Described())  # type: ignore[arg-type]
    ExporterMetrics().register(registry)  # the exporter's own counters and histogram
    lines = generate_latest(registry).decode().splitlines()
    described = [line for line in lines if line.startswith(("# HELP ", "# TYPE "))]
    # `_created` families: the exporter turns them off (`disable_created_metrics`) as it starts.
    return "".join(f"{line}\n" for line in described if not line.split()[2].endswith("_created"))


def run_list_of() -> Callable[[float], Runs]:
    result = run_list([])
    return lambda deadline: result


def test_every_family_says_what_it_is_as_reviewed() -> None:
    """Bugs caught: a family's help text or type changed by accident (a word lost, a family
    served as untyped): what users read in `/metrics` and Grafana's metric browser. The lines
    are kept in tests/fixtures/families.txt: a change shows in review as a diff. To accept
    one: `python -c "from tests.test_collector import families_text; print(families_text(),
    end='')" > tests/fixtures/families.txt`."""
    expected = (Path(__file__).parent / "fixtures" / "families.txt").read_text()
    assert families_text() == expected


@pytest.mark.parametrize("newest_first", [True, False, None])
def test_the_reading_families_serve_the_snapshots_values(newest_first: bool | None) -> None:
    """Bugs caught: a health gauge served with a value other than the snapshot's (warming,
    progress, store size, view age, the last full read's duration, the list's order, the
    build info's 1), or `nsml_run_list_newest_first` served before any full read said; a label
    named otherwise than the contract says (`mode`; `version`, `revision`, `python_version`)."""
    from exporter.collection.snapshot import Snapshot

    collector = NsmlCollector(make_settings(), FakeSource(run_list_of()), ExporterMetrics())
    snap = Snapshot(
        ok=False,
        duration=0.5,
        finished=1000.0,
        total_count=7,
        last_success=900.0,
        mode="background",
        view_started=850.0,
        full_read_seconds=42.0,
        warming=True,
        newest_first=newest_first,
        progress=0.25,
        stored=6,
    )
    served = {
        (s.name, tuple(s.labels.items())): s.value
        for family in collector.families(snap)
        for s in family.samples
    }
    build = next(key for key in served if key[0] == "nsml_exporter_build_info")
    assert served.pop(build) == 1
    assert [name for name, _ in build[1]] == ["version", "revision", "python_version"]
    expected = {
        ("nsml_up", ()): 0,
        ("nsml_api_reported_runs", ()): 7,
        ("nsml_scrape_duration_seconds", ()): 0.5,
        ("nsml_collect_timeout_seconds", ()): 9,
        ("nsml_last_success_timestamp_seconds", ()): 900,
        ("nsml_collection_mode", (("mode", "scrape"),)): 0,
        ("nsml_collection_mode", (("mode", "background"),)): 1,
        ("nsml_view_warming", ()): 1,
        ("nsml_full_read_progress_ratio", ()): 0.25,
        ("nsml_store_runs", ()): 6,
        ("nsml_view_age_seconds", ()): 150,
        ("nsml_full_read_duration_seconds", ()): 42,
    }
    if newest_first is not None:
        expected["nsml_run_list_newest_first", ()] = 1 if newest_first else 0
    assert served == expected


class RecordedDetails:
    """A `RunDetails` that notes what the collector asks of it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.shown = object()

    def follow(self, store: Any, wait_turn: Any) -> None:
        pass

    def view(self, series: list[Any]) -> Any:
        self.calls.append(("view", series))
        return self.shown

    def refresh(self, series: list[Any], versions: dict[Any, Any]) -> None:
        self.calls.append(("refresh", (series, versions)))

    def refresh_in_background(self, series: list[Any], versions: dict[Any, Any]) -> None:
        self.calls.append(("refresh_in_background", (series, versions)))


@pytest.mark.parametrize("once", [False, True])
def test_details_are_asked_for_the_runs_with_series_and_served(once: bool) -> None:
    """Bugs caught: the details asked for no run, or without the versions that tell a run
    gone (404) from one that changed since; the view not served; `--once` serving the view
    before reading it (its one chance), or a scrape waiting for the reads."""
    runs = [api_run("p1", "1", "RUN_STATE_IN_PROGRESS", updateTime="2024-09-03 11:00:00")]
    result = run_list(runs)
    details = RecordedDetails()
    settings = make_settings(collection_mode="scrape")
    collector = NsmlCollector(
        settings,
        FakeSource(lambda deadline: result),
        ExporterMetrics(),
        lambda: NOW,
        details=details,
        once=once,  # type: ignore[arg-type]
    )
    try:
        snap = collector.shared.get()
    finally:
        collector.close()
    assert snap.details is details.shown
    (record,) = snap.series
    asked = ([("p1", "1")], {("p1", "1"): ("RUN_STATE_IN_PROGRESS", record.updated)})
    if once:
        assert details.calls == [("refresh", asked), ("view", [("p1", "1")])]
    else:
        assert details.calls == [("view", [("p1", "1")]), ("refresh_in_background", asked)]


def collector_of(runs: list[dict[str, Any]], metrics: ExporterMetrics) -> NsmlCollector:
    result = run_list(runs)
    return NsmlCollector(make_settings(), FakeSource(lambda deadline: result), metrics)


def test_an_internal_error_is_counted_logged_and_served_as_down(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bugs caught: a bug in the collection escaping the scrape (a 500 instead of `nsml_up 0`),
    not counted as `internal`, or logged without its traceback."""
    metrics = ExporterMetrics()
    collector = collector_of([], metrics)
    registry = CollectorRegistry()
    metrics.register(registry)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(collector.store, "snapshot", broken)
    snap = collector.collect_once()
    assert (snap.ok, snap.error) == (False, "internal")
    assert registry.get_sample_value("nsml_collection_errors_total", {"reason": "internal"}) == 1
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.getMessage() == "collection failed (internal error)"
    assert record.exc_info is not None
    collector.close()


def test_a_collections_duration_is_what_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug caught: the duration served (`nsml_scrape_duration_seconds`) computed from the
    clock's reading plus, not minus, the start: a number of days, success or failure."""
    collector = collector_of([api_run("p", "1")], ExporterMetrics())
    for _ in range(2):
        began = time.monotonic()
        snap = collector.collect_once()
        took = time.monotonic() - began
        assert 0 <= snap.duration <= took
        monkeypatch.setattr(collector.store, "snapshot", lambda *a, **k: 1 / 0)  # fails next
    collector.close()


def test_a_collection_says_what_it_read_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Bugs caught: the debug line of each collection missing a part, or with another's."""
    caplog.set_level("DEBUG", logger="exporter.collection.collector")
    collector = collector_of([api_run("p", "1"), api_run("p", "2")], ExporterMetrics())
    snap = collector.collect_once()
    collector.close()
    assert snap.full_read_seconds is not None  # from the read that made the view
    said = [r.getMessage() for r in caplog.records if r.name == "exporter.collection.collector"]
    assert said == [f"collected 2 runs (totalCount 2) in {snap.duration:.3f}s, scrape"]


def test_details_follow_the_collectors_store_at_the_readers_pace() -> None:
    """Bug caught: the details not given the store (a run whose detail answers 404 stays
    counted; a detail's status never reaches its run) or the reader's pace."""
    followed: list[Any] = []

    class Following(RecordedDetails):
        def follow(self, store: Any, wait_turn: Any) -> None:
            followed.extend([store, wait_turn])

    collector = NsmlCollector(
        make_settings(),
        FakeSource(run_list_of()),
        ExporterMetrics(),
        details=Following(),  # type: ignore[arg-type]
    )
    assert followed == [collector.store, collector.reader.wait_turn]
