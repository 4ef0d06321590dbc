"""What one collection found, reduced to what the metrics need (`summarize`, a plain function)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from math import inf
from operator import itemgetter
from zoneinfo import ZoneInfo

from prometheus_client.utils import floatToGoString

from ..errors import InvalidResponseError
from ..nsml.models import Run, to_timestamp
from ..nsml.paging import RunList
from .details import DetailsView

CountKey = tuple[str, str, str, str]  # project_id, project, status, run_type
HistogramKey = tuple[str, str, str, str]  # project_id, project, run_type, status
_PROJECT = itemgetter("projectId", "projectName")


@dataclass(slots=True)
class Histogram:
    """Observations bucketed by upper bounds (`le`); the last bucket is +Inf."""

    counts: list[int]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls([0] * (len(bounds) + 1))

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1  # value <= bound: that bound's bucket
        self.total += value

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        """`(le, count)` pairs as prometheus_client's histogram families take them."""
        les = [*map(floatToGoString, bounds), "+Inf"]
        return list(zip(les, accumulate(self.counts), strict=True))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One collection's outcome. A failed one (`ok=False`) carries no runs."""

    ok: bool
    duration: float
    finished: float
    counts: dict[CountKey, int] = field(default_factory=dict)
    #: (run, createTime, updateTime as Unix seconds) for runs with per-run series, oldest first.
    series: tuple[tuple[Run, float, float], ...] = ()
    omitted: int = 0
    #: `totalCount`, and the end of the collection that read it: this one's, or for a failure
    #: the last success's (None and 0 before the first).
    total_count: int | None = None
    last_success: float = 0.0
    error: str = ""
    #: Finished runs: updateTime minus createTime, and now minus updateTime.
    durations: dict[HistogramKey, Histogram] = field(default_factory=dict)
    finished_ages: dict[HistogramKey, Histogram] = field(default_factory=dict)
    #: (project_id, project) -> the newest createTime among its runs.
    last_created: dict[tuple[str, str], float] = field(default_factory=dict)
    #: GPU and capacity details of the runs with series, when DETAILS is on.
    details: DetailsView | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings that shape a snapshot."""

    projects: frozenset[str]
    series_statuses: frozenset[str]
    max_run_series: int
    zone: ZoneInfo
    active_statuses: frozenset[str] = frozenset({"RUN_STATE_IN_PROGRESS"})
    duration_buckets: tuple[float, ...] = ()
    finished_age_buckets: tuple[float, ...] = ()


def timestamps(run: Run, zone: ZoneInfo) -> tuple[float, float]:
    """(createTime, updateTime) as Unix seconds; a year the platform cannot convert is invalid."""
    try:
        return to_timestamp(run["createTime"], zone), to_timestamp(run["updateTime"], zone)
    except (ValueError, OverflowError):
        raise InvalidResponseError(
            f"run {run['runName']} of project {run['projectId']}: createTime/updateTime "
            "is not a valid date and time"
        ) from None


def summarize(
    run_list: RunList,
    rules: Rules,
    statuses: Iterable[str],
    *,
    duration: float,
    finished: float,
) -> Snapshot:
    """Counts zero-filled with `statuses` (known and ever seen, which must include every status
    in the list), and per-run series for the oldest eligible runs."""
    runs: Collection[Run] = run_list.runs.values()
    if rules.projects:
        wanted = rules.projects
        runs = [r for r in runs if r["projectId"] in wanted or r["projectName"] in wanted]
    counts = Counter((r["projectId"], r.get("runType", ""), r["status"]) for r in runs)
    names = dict(map(_PROJECT, runs))  # a project's name as its last run gives it
    # Zero-fill: every (project, run type) present gets every known or ever-seen status.
    filled: dict[CountKey, int] = {}
    for project_id, run_type in sorted({key[:2] for key in counts}):
        for status in statuses:
            filled[project_id, names[project_id], status, run_type] = counts.get(
                (project_id, run_type, status), 0
            )
    # Times are converted only for runs that get series: counting needs none.
    timed = [
        (run, *timestamps(run, rules.zone))
        for run in runs
        if run["status"] in rules.series_statuses
    ]
    timed.sort(key=lambda item: (item[1], item[0]["projectId"], item[0]["runName"]))
    durations, finished_ages, last_created = _finished(runs, names, rules, finished)
    cap = rules.max_run_series
    return Snapshot(
        ok=True,
        duration=duration,
        finished=finished,
        counts=filled,
        series=tuple(timed[:cap]),
        omitted=max(0, len(timed) - cap),
        total_count=run_list.total_count,
        last_success=finished,
        durations=durations,
        finished_ages=finished_ages,
        last_created=last_created,
    )


Histograms = dict[HistogramKey, Histogram]


def _finished(
    runs: Iterable[Run], names: dict[str, str], rules: Rules, now: float
) -> tuple[Histograms, Histograms, dict[tuple[str, str], float]]:
    """Both histograms of finished runs, and each project's newest createTime, in one pass."""
    durations: Histograms = {}
    ages: Histograms = {}
    newest: dict[str, float] = {}
    active, zone = rules.active_statuses, rules.zone
    by_duration, by_age = rules.duration_buckets, rules.finished_age_buckets
    for run in runs:
        project_id = run["projectId"]
        created, updated = timestamps(run, zone)
        if created > newest.get(project_id, -inf):
            newest[project_id] = created
        if run["status"] in active:
            continue
        key = (project_id, names[project_id], run.get("runType", ""), run["status"])
        if key not in durations:
            durations[key] = Histogram.empty(by_duration)
            ages[key] = Histogram.empty(by_age)
        durations[key].observe(by_duration, updated - created)
        ages[key].observe(by_age, now - updated)
    return durations, ages, {(pid, names[pid]): at for pid, at in newest.items()}
