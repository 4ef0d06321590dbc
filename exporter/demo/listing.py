"""The simulator's run list as NSML pages it: which runs exist now, in what order.

Two orders: `newest` (newest first, as the API page's only example lists runs) and `arbitrary`
(a fixed shuffle; a new run lands anywhere), so that the exporter's order check meets both. The
list changes under a reader as the real one may: runs created at the head (or anywhere) as time
passes or when added, runs deleted, runs replaced in place (finished). A gateway may cap
`pageSize` silently, or refuse a larger one with 400: `max_page_size` and `refuse_large_pages`
model both. Paging a million runs costs a slice, never a copy of the list.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Iterable

from .population import SimRun

ORDERS = ("newest", "arbitrary")
Key = tuple[str, str]


class Listing:
    """The runs that exist, in list order. Thread-safe."""

    def __init__(self, runs: Iterable[SimRun] = (), order: str = "newest", seed: int = 7) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}")
        self.order = order
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listed: list[SimRun] = []  # newest: oldest first (pages are read from the end)
        self._future: list[SimRun] = []  # created later than now: listed when their time comes
        self._future_at: list[float] = []
        self._by_key: dict[Key, SimRun] = {}
        self.set(runs)

    def set(self, runs: Iterable[SimRun]) -> None:
        ordered = sorted(runs, key=lambda r: r.created)
        with self._lock:
            self._listed, self._future, self._future_at = [], ordered, [r.created for r in ordered]
            self._by_key = {(r.project_id, r.run_name): r for r in ordered}

    def _advance(self, now: float) -> None:
        """List the runs whose creation time has come (the lock held)."""
        due = bisect.bisect_right(self._future_at, now)
        if not due:
            return
        arrived, self._future, self._future_at = (
            self._future[:due],
            self._future[due:],
            self._future_at[due:],
        )
        if self.order == "newest":
            self._listed.extend(arrived)
        elif not self._listed:
            self._listed = arrived
            self._rng.shuffle(self._listed)
        else:
            for run in arrived:
                self._listed.insert(self._rng.randrange(len(self._listed) + 1), run)

    def page(self, now: float, start: int, size: int) -> tuple[list[SimRun], int]:
        """Runs `start` to `start + size` in list order, and how many exist."""
        with self._lock:
            self._advance(now)
            listed = self._listed
            total = len(listed)
            if start >= total or size <= 0:
                return [], total
            if self.order == "newest":
                end = total - start
                return listed[max(0, end - size) : end][::-1], total
            return listed[start : start + size], total

    def visible(self, now: float) -> list[SimRun]:
        """Every run that exists at `now`, in list order."""
        runs, _ = self.page(now, 0, 1 << 62)
        return runs

    def find(self, key: Key, now: float) -> SimRun | None:
        with self._lock:
            run = self._by_key.get(key)
        return run if run is not None and run.created <= now else None

    def add(self, runs: Iterable[SimRun]) -> None:
        """New runs, listed when their creation time comes (at once for a past one)."""
        with self._lock:
            for run in runs:
                at = bisect.bisect_right(self._future_at, run.created)
                self._future.insert(at, run)
                self._future_at.insert(at, run.created)
                self._by_key[run.project_id, run.run_name] = run

    def delete(self, keys: Iterable[Key]) -> None:
        gone = set(keys)
        with self._lock:
            self._listed = [r for r in self._listed if (r.project_id, r.run_name) not in gone]
            kept = [r for r in self._future if (r.project_id, r.run_name) not in gone]
            self._future, self._future_at = kept, [r.created for r in kept]
            for key in gone:
                self._by_key.pop(key, None)

    def replace(self, run: SimRun) -> None:
        """`run` in place of the run with its identity (a run that finished, say)."""
        key = (run.project_id, run.run_name)
        with self._lock:
            for runs in (self._listed, self._future):
                for index, old in enumerate(runs):
                    if (old.project_id, old.run_name) == key:
                        runs[index] = run
            self._by_key[key] = run
