"""What the run list holds, reduced to what the metrics need.

A `Tally` takes runs one at a time (a full read hands it each distinct run as its page arrives)
and keeps only aggregates: counts, the two histograms of finished runs, each project's newest run,
and the oldest runs eligible for per-run series, up to `MAX_RUN_SERIES`. Two tallies of disjoint
runs merge (the background view and the runs created since, read from the list's head). `snapshot`
turns one into the `Snapshot` a scrape is served from.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from math import inf
from zoneinfo import ZoneInfo

from prometheus_client.utils import floatToGoString

from ..errors import InvalidResponseError
from ..nsml.models import Run, to_timestamp
from ..nsml.paging import RunKey, run_key
from .details import DetailsView

CountKey = tuple[str, str, str, str]  # project_id, project, status, run_type
HistogramKey = tuple[str, str, str, str]  # project_id, project, run_type, status


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
    #: How the run list is read now ("scrape" or "background"), and the full read the view
    #: rests on: when it began (Unix seconds) and how long it took.
    mode: str = "scrape"
    view_started: float = 0.0
    full_read_seconds: float = 0.0
    #: No full read has finished yet: the first one is under way.
    warming: bool = False
    #: Whether the last full read found the list newest first (None before the first).
    newest_first: bool | None = None


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


HistogramKey3 = tuple[str, str, str]  # project_id, run_type, status
Series = tuple[float, str, str, Run, float]  # created, project_id, run_name, run, updated


class Tally:
    """Aggregates of runs, taken one at a time; `now` is when finished ages are measured."""

    def __init__(self, rules: Rules, now: float) -> None:
        self.rules = rules
        self.now = now
        self.runs = 0  # runs taken, the projects filter aside
        self.counts: Counter[tuple[str, str, str]] = Counter()  # project_id, run_type, status
        self.names: dict[str, str] = {}  # a project's name as its last run gives it
        self.durations: dict[HistogramKey3, Histogram] = {}
        self.ages: dict[HistogramKey3, Histogram] = {}
        self.newest: dict[str, float] = {}  # project_id -> newest createTime
        self.series: list[Series] = []
        self.eligible = 0
        #: The newest createTime of any run taken, and the runs created in that second: where
        #: a read of the list's head stops.
        self.newest_created = -inf
        self.edge: set[RunKey] = set()

    def add(self, run: Run) -> None:
        rules = self.rules
        created, updated = timestamps(run, rules.zone)
        self.runs += 1
        if created >= self.newest_created:
            if created > self.newest_created:
                self.newest_created, self.edge = created, set()
            self.edge.add(run_key(run))
        project_id, status = run["projectId"], run["status"]
        if rules.projects and not {project_id, run["projectName"]} & rules.projects:
            return
        self.names[project_id] = run["projectName"]
        run_type = run.get("runType", "")
        self.counts[project_id, run_type, status] += 1
        if created > self.newest.get(project_id, -inf):
            self.newest[project_id] = created
        if status in rules.series_statuses:
            self.eligible += 1
            self.series.append((created, project_id, run["runName"], run, updated))
            if len(self.series) > 2 * rules.max_run_series + 64:
                self._prune()
        if status not in rules.active_statuses:
            key = (project_id, run_type, status)
            if key not in self.durations:
                self.durations[key] = Histogram.empty(rules.duration_buckets)
                self.ages[key] = Histogram.empty(rules.finished_age_buckets)
            self.durations[key].observe(rules.duration_buckets, updated - created)
            self.ages[key].observe(rules.finished_age_buckets, self.now - updated)

    def _prune(self) -> None:
        """Keep the oldest `MAX_RUN_SERIES` eligible runs, by (createTime, project, name)."""
        self.series.sort(key=lambda item: item[:3])
        del self.series[self.rules.max_run_series :]

    def merged(self, other: Tally) -> Tally:
        """This tally and `other`'s (of other runs) in a new one; neither is changed."""
        both = Tally(self.rules, other.now)
        both.runs = self.runs + other.runs
        both.counts = self.counts + other.counts
        both.names = {**self.names, **other.names}
        for mine, theirs, into in (
            (self.durations, other.durations, both.durations),
            (self.ages, other.ages, both.ages),
        ):
            for key in mine.keys() | theirs.keys():
                parts = [h for h in (mine.get(key), theirs.get(key)) if h is not None]
                into[key] = Histogram(
                    [sum(c) for c in zip(*(h.counts for h in parts), strict=True)],
                    sum(h.total for h in parts),
                )
        both.newest = dict(self.newest)
        for project_id, created in other.newest.items():
            both.newest[project_id] = max(created, both.newest.get(project_id, -inf))
        both.series = self.series + other.series
        both.eligible = self.eligible + other.eligible
        both._prune()
        both.newest_created = max(self.newest_created, other.newest_created)
        both.edge = {
            key
            for tally in (self, other)
            if tally.newest_created == both.newest_created
            for key in tally.edge
        }
        return both

    def snapshot(
        self, statuses: Iterable[str], *, duration: float, finished: float, total_count: int
    ) -> Snapshot:
        """Counts zero-filled with `statuses` (known and ever seen, which must include every
        status taken), and per-run series for the oldest eligible runs."""
        names = self.names
        filled: dict[CountKey, int] = {}
        for project_id, run_type in sorted({key[:2] for key in self.counts}):
            for status in statuses:
                filled[project_id, names[project_id], status, run_type] = self.counts.get(
                    (project_id, run_type, status), 0
                )
        self._prune()
        return Snapshot(
            ok=True,
            duration=duration,
            finished=finished,
            counts=filled,
            series=tuple((run, created, updated) for created, _, _, run, updated in self.series),
            omitted=max(0, self.eligible - self.rules.max_run_series),
            total_count=total_count,
            last_success=finished,
            durations=self._named(self.durations),
            finished_ages=self._named(self.ages),
            last_created={(pid, names[pid]): at for pid, at in self.newest.items()},
        )

    def _named(self, histograms: dict[HistogramKey3, Histogram]) -> dict[HistogramKey, Histogram]:
        return {
            (project_id, self.names[project_id], run_type, status): histogram
            for (project_id, run_type, status), histogram in histograms.items()
        }

    def statuses(self) -> set[str]:
        return {status for _, _, status in self.counts}
