"""One collection at a time, shared: concurrent scrapes wait for the one in flight.

`CACHE_SECONDS` reuses a successful collection while it is younger than that; a failed one is
never cached, so the first scrape after the API comes back reads it. `MIN_INTERVAL` keeps a flood
of sequential scrapes from becoming a flood of signed API requests: a scrape that comes sooner
than that after the last collection began is served that collection, success or failure (during
an outage that protects the quota too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedCollection(Generic[T]):
    """Single-flight with a cache: `get()` runs `collect` at most once at a time."""

    def __init__(
        self,
        collect: Callable[[], T],
        cache_seconds: float = 0.0,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        succeeded: Callable[[T], bool] = lambda result: True,
    ) -> None:
        self._collect = collect
        self._succeeded = succeeded
        self._reuse_for = cache_seconds
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: threading.Event | None = None
        self._last: T | None = None
        self._last_started = 0.0
        self._last_finished = 0.0

    @property
    def last(self) -> T | None:
        """The newest finished collection, if any."""
        return self._last

    def _fresh(self, now: float) -> bool:
        if self._last is None:
            return False
        cached = now - self._last_finished < self._reuse_for and self._succeeded(self._last)
        return cached or now - self._last_started < self._min_interval

    def get(self) -> T:
        with self._lock:
            if self._fresh(self._clock()):
                assert self._last is not None
                return self._last
            done = self._inflight
            leader = done is None
            if done is None:
                done = self._inflight = threading.Event()
        if not leader:
            done.wait()
            if self._last is None:
                raise RuntimeError("the shared collection failed unexpectedly")
            return self._last
        started = self._clock()
        result: T | None = None
        try:
            result = self._collect()
        finally:
            with self._lock:
                if result is not None:
                    self._last = result
                    self._last_started, self._last_finished = started, self._clock()
                self._inflight = None
            done.set()
        return result
