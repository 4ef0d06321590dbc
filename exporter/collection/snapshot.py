"""What one collection serves, and the shapes it is made of: a run as the metrics see it
(`Record`), the settings that shape the metrics (`Rules`), a histogram of finished runs, and the
`Snapshot` that every family of one collection is built from. `store.RunStore` makes snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from typing import NamedTuple
from zoneinfo import ZoneInfo

from prometheus_client.utils import floatToGoString

from ..nsml.paging import RunKey
from .details import DetailsView

CountKey = tuple[str, str, str, str]  # project_id, project, status, run_type
HistogramKey = tuple[str, str, str, str]  # project_id, project, run_type, status


class Record(NamedTuple):
    """One run as the metrics see it. Times are Unix seconds."""

    project_id: str
    project: str
    run: str
    run_type: str
    status: str
    creator: str
    created: float
    updated: float

    @property
    def key(self) -> RunKey:
        """The run's identity: (projectId, runName)."""
        return self.project_id, self.run


@dataclass(slots=True)
class Histogram:
    """Observations bucketed by upper bounds (`le`); the last bucket is +Inf."""

    counts: list[int]
    total: float = 0.0

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
    #: The runs with per-run series, oldest first.
    series: tuple[Record, ...] = ()
    omitted: int = 0
    #: `totalCount` as last read (None before the first complete read), and the end of the last
    #: complete full read (0 before the first).
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
    #: Share of the full read under way that has been read, and the runs in the store.
    progress: float = 0.0
    stored: int = 0


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
