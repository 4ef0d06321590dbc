"""What one collection found, reduced to what the metrics need (`summarize`, a plain function)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from zoneinfo import ZoneInfo

from .errors import InvalidResponseError
from .models import Run, to_timestamp
from .paging import RunList

CountKey = tuple[str, str, str, str]  # project_id, project, status, run_type
_PROJECT = itemgetter("projectId", "projectName")


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
    total_count: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings that shape a snapshot."""

    projects: frozenset[str]
    series_statuses: frozenset[str]
    max_run_series: int
    zone: ZoneInfo


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
    cap = rules.max_run_series
    return Snapshot(
        ok=True,
        duration=duration,
        finished=finished,
        counts=filled,
        series=tuple(timed[:cap]),
        omitted=max(0, len(timed) - cap),
        total_count=run_list.total_count,
    )
