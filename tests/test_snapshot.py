"""A run list reduced to what the metrics need: buckets at their bounds, per-run series under
the cap, each project's newest run. Runs are decoded from JSON as the API sends them."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.collection.snapshot import Histogram, Rules, Snapshot, Tally
from exporter.nsml.models import decode_page
from tests.conftest import api_run

UTC = ZoneInfo("UTC")
IN_PROGRESS, COMPLETED = "RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED"
BOUNDS = (60.0, 300.0)


def snapshot(runs: list[dict[str, Any]], now: float = 2e9, **rules: Any) -> Snapshot:
    page = decode_page(json.dumps({"runList": runs, "totalCount": len(runs)}).encode())
    values: dict[str, Any] = {
        "projects": frozenset(),
        "series_statuses": frozenset({IN_PROGRESS}),
        "max_run_series": 1000,
        "zone": UTC,
        "duration_buckets": BOUNDS,
        "finished_age_buckets": BOUNDS,
    }
    values.update(rules)
    tally = Tally(Rules(**values), now)
    for run in page["runList"]:
        tally.add(run)
    return tally.snapshot(
        [IN_PROGRESS, COMPLETED], duration=0.1, finished=now, total_count=len(runs)
    )


def finished_run(name: str, created: str, updated: str, project: str = "p1") -> dict[str, Any]:
    return api_run(project, name, COMPLETED, created=created, updateTime=updated)


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [(0, 0), (59, 0), (60, 0), (61, 1), (300, 1), (301, 2)],
)
def test_a_value_on_a_bound_lands_in_that_bounds_bucket(seconds: int, bucket: int) -> None:
    """Bug caught: `bisect_right`, which puts exactly 60 s in the bucket above `le="60.0"`."""
    histogram = Histogram.empty(BOUNDS)
    histogram.observe(BOUNDS, float(seconds))
    assert histogram.counts == [int(i == bucket) for i in range(3)]


def test_a_run_of_exactly_60_seconds_is_counted_under_le_60() -> None:
    snap = snapshot([finished_run("1", "2024-09-03 10:00:00", "2024-09-03 10:01:00")])
    (histogram,) = snap.durations.values()
    assert histogram.cumulative(BOUNDS) == [("60.0", 1), ("300.0", 1), ("+Inf", 1)]
    assert histogram.total == 60.0


def test_the_newest_created_time_counts_runs_in_progress_too() -> None:
    """Bug caught: the newest createTime taken from finished runs only."""
    snap = snapshot(
        [
            finished_run("1", "2024-09-03 09:00:00", "2024-09-03 09:30:00"),
            api_run("p1", "2", IN_PROGRESS, created="2024-09-03 11:00:00"),
        ]
    )
    newest = snap.last_created[("p1", "name-p1")]
    assert newest == pytest.approx(1725361200.0)  # 2024-09-03 11:00:00 UTC


def test_the_newest_created_time_is_per_project() -> None:
    snap = snapshot(
        [
            finished_run("1", "2024-09-03 09:00:00", "2024-09-03 09:30:00", project="a"),
            finished_run("1", "2024-09-03 10:00:00", "2024-09-03 10:30:00", project="b"),
        ]
    )
    assert snap.last_created[("a", "name-a")] + 3600 == snap.last_created[("b", "name-b")]


@pytest.mark.parametrize(("cap", "kept", "omitted"), [(0, 0, 3), (2, 2, 1), (3, 3, 0), (4, 3, 0)])
def test_omitted_counts_only_runs_eligible_for_series(cap: int, kept: int, omitted: int) -> None:
    """Bug caught: `omitted` counted over all runs (3 in progress + 5 completed, cap 2 would
    say 6 instead of 1)."""
    runs = [
        api_run("p1", f"live{n}", IN_PROGRESS, created=f"2024-09-03 1{n}:00:00") for n in range(3)
    ]
    runs += [
        finished_run(f"done{n}", "2024-09-03 08:00:00", "2024-09-03 08:10:00") for n in range(5)
    ]
    snap = snapshot(runs, max_run_series=cap)
    assert len(snap.series) == kept
    assert snap.omitted == omitted


def test_the_oldest_runs_keep_their_series_under_the_cap() -> None:
    runs = [
        api_run("p1", "new", IN_PROGRESS, created="2024-09-03 12:00:00"),
        api_run("p1", "old", IN_PROGRESS, created="2024-09-01 12:00:00"),
        api_run("p1", "mid", IN_PROGRESS, created="2024-09-02 12:00:00"),
    ]
    snap = snapshot(runs, max_run_series=2)
    assert [run["runName"] for run, _, _ in snap.series] == ["old", "mid"]


def test_finished_age_is_now_minus_update_time() -> None:
    updated = 1725357600.0  # 2024-09-03 10:00:00 UTC
    snap = snapshot(
        [finished_run("1", "2024-09-03 09:00:00", "2024-09-03 10:00:00")], now=updated + 300
    )
    (ages,) = snap.finished_ages.values()
    assert ages.cumulative(BOUNDS) == [("60.0", 0), ("300.0", 1), ("+Inf", 1)]


def test_two_tallies_merged_are_the_tally_of_all_their_runs() -> None:
    """Bugs caught: a histogram key of one side dropped, series not re-capped after the merge,
    each project's newest run or the list's newest second taken from one side only."""
    from exporter.collection.snapshot import Tally

    raw = [
        finished_run("1", "2024-09-03 10:00:00", "2024-09-03 10:00:30"),
        finished_run("2", "2024-09-03 10:00:00", "2024-09-03 10:04:00", project="p2"),
        api_run("p1", "3", IN_PROGRESS, created="2024-09-03 10:05:00"),
        api_run("p2", "4", IN_PROGRESS, created="2024-09-03 10:06:00"),
        api_run("p1", "5", IN_PROGRESS, created="2024-09-03 10:06:00"),
        finished_run("6", "2024-09-03 09:00:00", "2024-09-03 11:00:00", project="p3"),
    ]
    runs = decode_page(json.dumps({"runList": raw, "totalCount": 6}).encode())["runList"]
    rules = Rules(
        projects=frozenset(),
        series_statuses=frozenset({IN_PROGRESS}),
        max_run_series=2,
        zone=UTC,
        duration_buckets=BOUNDS,
        finished_age_buckets=BOUNDS,
    )
    whole, head, rest = Tally(rules, 2e9), Tally(rules, 2e9), Tally(rules, 2e9)
    for run in runs:
        whole.add(run)
    # The head holds an older run of p2 than the rest does: the newest must still win.
    for index, run in enumerate(runs):
        (rest if index in (0, 3, 4) else head).add(run)
    statuses = [IN_PROGRESS, COMPLETED]
    one = whole.snapshot(statuses, duration=0, finished=2e9, total_count=6)
    both = rest.merged(head).snapshot(statuses, duration=0, finished=2e9, total_count=6)
    assert both.counts == one.counts
    assert both.series == one.series and len(both.series) == 2 and both.omitted == 1
    assert both.last_created == one.last_created
    for mine, theirs in ((both.durations, one.durations), (both.finished_ages, one.finished_ages)):
        assert {k: (h.counts, h.total) for k, h in mine.items()} == {
            k: (h.counts, h.total) for k, h in theirs.items()
        }
    merged = rest.merged(head)
    assert (merged.newest_created, merged.edge) == (whole.newest_created, whole.edge)
    assert merged.edge == {("p2", "4"), ("p1", "5")}
