"""Retries of one page within the collection's deadline.

A retryable error (429, 5xx, a timeout, a broken connection) is asked again up to `RETRIES`
times, backing off exponentially with jitter, never sooner than the API's `Retry-After`, and never
sleeping past the deadline: a wait that would pass it fails at once, saying so.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import CollectionError

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE = 0.2
BACKOFF_CAP = 2.0


def exponential(attempt: int, base: float, cap: float) -> float:
    """The back-off every reader uses: `base` seconds after the first failure (`attempt` 0),
    doubling with each failure after it, never more than `cap`."""
    return min(cap, base * 2.0 ** min(attempt, 64))


def backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number `attempt` + 1 of one request: jittered, so that
    requests that failed together do not come back together."""
    delay = exponential(attempt, BACKOFF_BASE, BACKOFF_CAP) * random.uniform(0.5, 1.0)
    return delay if retry_after is None else max(delay, retry_after)


def with_retries(
    call: Callable[[], T],
    *,
    retries: int,
    deadline: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, asked again on retryable `CollectionError`s while retries and time allow."""
    attempt = 0
    while True:
        try:
            return call()
        except CollectionError as error:
            if not error.retryable or attempt >= retries:
                raise
            delay = backoff(attempt, error.retry_after)
            if time.monotonic() + delay >= deadline:
                raise type(error)(
                    f"{error}; a retry in {delay:.1f}s would pass COLLECT_TIMEOUT"
                ) from None
            attempt += 1
            log.debug("retrying %s in %.2fs (%d/%d): %s", what, delay, attempt, retries, error)
        sleep(delay)
