"""A `RunSource` for collector tests: the whole run list from a function, no HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

from exporter.nsml.models import Run
from exporter.nsml.paging import Progress, RunKey, RunList, Take

Runs = list[Run]
Fetch = Callable[[float], Runs]


class FakeSource:
    """`fetch(deadline)` gives the list (or raises a `CollectionError`), newest first or not;
    the whole list is one page."""

    latency = 0.0

    def __init__(self, fetch: Fetch, newest_first: bool = True) -> None:
        self.fetch = fetch
        self.newest_first = newest_first
        self.reads = 0

    def read_runs(
        self,
        take: Take,
        created: Callable[[Run], float],
        *,
        deadline: Callable[[], float | None],
        pace: Callable[[], None] = lambda: None,
        progress: Progress | None = None,
    ) -> RunList:
        self.reads += 1
        until = deadline()
        runs = self.fetch(time.monotonic() + 60 if until is None else until)
        take(runs)
        if progress is not None:
            progress.pages, progress.planned, progress.total_count = 1, 1, len(runs)
        return RunList(len(runs), 1, max(1, len(runs)), self.newest_first)

    def read_head(
        self,
        known: Callable[[RunKey], bool],
        take: Take,
        *,
        deadline: float,
        max_pages: int,
        min_pages: int = 1,
        pace: Callable[[], None] = lambda: None,
    ) -> tuple[int, int]:
        return 0, 0

    def run_exists(self, project_id: str, run_name: str, deadline: float) -> bool:
        runs = self.fetch(deadline)
        return any((r["projectId"], r["runName"]) == (project_id, run_name) for r in runs)
