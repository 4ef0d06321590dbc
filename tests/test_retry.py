"""Retries within the deadline: the backoff's bounds, Retry-After, and what is not retried."""

from __future__ import annotations

import time

import pytest

from exporter.errors import AuthError, HTTPStatusError, ThrottledError
from exporter.nsml.retry import backoff, with_retries


class Flaky:
    """Fails `failures` times with `error`, then answers "ok"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_three_retries_back_off_exponentially_within_their_bounds() -> None:
    """Bug caught: a backoff of BASE*2*attempt (0, 0.4, 0.8 s) instead of BASE*2**attempt."""
    for _ in range(50):  # the jitter is random: its bounds hold every time
        slept: list[float] = []
        call = Flaky(3, ThrottledError("429", retryable=True))
        result = with_retries(
            call, retries=3, deadline=time.monotonic() + 60, what="page 1", sleep=slept.append
        )
        assert result == "ok"
        assert len(slept) == 3
        for delay, (low, high) in zip(slept, [(0.1, 0.2), (0.2, 0.4), (0.4, 0.8)], strict=True):
            assert low <= delay <= high


def test_backoff_is_capped_at_two_seconds() -> None:
    assert all(1.0 <= backoff(10, None) <= 2.0 for _ in range(50))


def test_retry_after_is_a_floor_on_the_wait() -> None:
    assert backoff(0, 7.0) == 7.0
    assert backoff(3, 0.0) >= 0.8  # a Retry-After of 0 does not cut the backoff


def test_no_more_than_retries_retries() -> None:
    call = Flaky(3, ThrottledError("429", retryable=True))
    with pytest.raises(ThrottledError):
        with_retries(
            call, retries=2, deadline=time.monotonic() + 60, what="page 1", sleep=lambda s: None
        )
    assert call.calls == 3


def test_an_error_that_is_not_retryable_is_asked_once() -> None:
    call = Flaky(1, AuthError("401"))
    with pytest.raises(AuthError):
        with_retries(
            call, retries=5, deadline=time.monotonic() + 60, what="page 1", sleep=lambda s: None
        )
    assert call.calls == 1


def test_a_wait_that_would_pass_the_deadline_fails_at_once_saying_so() -> None:
    call = Flaky(1, ThrottledError("429", retryable=True, retry_after=30))
    slept: list[float] = []
    with pytest.raises(ThrottledError, match="would pass COLLECT_TIMEOUT"):
        with_retries(
            call, retries=2, deadline=time.monotonic() + 5, what="page 1", sleep=slept.append
        )
    assert slept == []


@pytest.mark.parametrize(
    "error",
    [
        ThrottledError("page 1: HTTP 429", retryable=True, retry_after=7.0),
        HTTPStatusError("page 1: HTTP 503", retryable=True, retry_after=7.0, status=503),
    ],
    ids=["429", "503"],
)
def test_a_retry_after_of_429_or_503_is_waited_for(error: Exception) -> None:
    """Bug caught: the Retry-After of a 503 (or a 429) dropped on its way into the error, so
    an API that asked for 7 s is asked again within a second."""
    slept: list[float] = []
    flaky = Flaky(1, error)
    deadline = time.monotonic() + 60
    assert (
        with_retries(flaky, retries=1, deadline=deadline, what="page 1", sleep=slept.append) == "ok"
    )
    assert slept == [7.0]


def test_each_retry_is_said_at_debug_with_its_wait_and_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bugs caught: the debug line that explains a slow page (what is retried, after how long,
    which retry of how many, and why) missing a part or naming another."""
    caplog.set_level("DEBUG", logger="exporter.nsml.retry")
    waits: list[float] = []
    call = Flaky(2, HTTPStatusError("HTTP 503", status=503, retryable=True, retry_after=0.25))
    result = with_retries(
        call, retries=3, deadline=time.monotonic() + 60, what="page 7", sleep=waits.append
    )
    assert result == "ok"
    assert [r.getMessage() for r in caplog.records] == [
        f"retrying page 7 in {waits[0]:.2f}s (1/3): HTTP 503",
        f"retrying page 7 in {waits[1]:.2f}s (2/3): HTTP 503",
    ]
    assert all(wait >= 0.25 for wait in waits)  # Retry-After, kept by HTTPStatusError
