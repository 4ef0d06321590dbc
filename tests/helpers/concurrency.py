"""Counting calls that run at the same time."""

from __future__ import annotations

import threading
from types import TracebackType


class InFlight:
    """`with in_flight:` around a call counts it while it runs; `most` is the peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._now -= 1
