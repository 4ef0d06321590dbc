"""A `RunSource` for collector tests: the whole run list from a function, no HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

from exporter.nsml.models import Run
from exporter.nsml.paging import Created, RunKey, RunList, Take

Runs = list[Run]
Fetch = Callable[[float], Runs]


class FakeSource:
    """`fetch(deadline)` gives the list (or raises a `CollectionError`), newest first or not."""

    latency = 0.0

    def __init__(self, fetch: Fetch, newest_first: bool = True) -> None:
        self.fetch = fetch
        self.newest_first = newest_first
        self.reads = 0

    def read_runs(
        self,
        take: Take,
        created: Created,
        *,
        deadline: float | None,
        pace: Callable[[], None] = lambda: None,
    ) -> RunList:
        self.reads += 1
        runs = self.fetch(time.monotonic() + 60 if deadline is None else deadline)
        for run in runs:
            take(run)
        return RunList(len(runs), 1, len(runs), max(1, len(runs)), self.newest_first)

    def read_head(
        self,
        since: float,
        known: Callable[[RunKey], bool],
        take: Take,
        created: Created,
        *,
        deadline: float,
    ) -> tuple[int, int]:
        return 0, 0
