"""The single-flight with its cache and minimum interval, on a fake clock: which scrapes collect
and which are served the last collection."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from exporter.collection.shared import SharedCollection
from tests.helpers.concurrency import InFlight


@dataclass
class Result:
    number: int
    ok: bool = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Api:
    """A collection that takes `seconds` on the fake clock and can be made to fail."""

    def __init__(self, clock: Clock, seconds: float = 0.0) -> None:
        self.clock = clock
        self.seconds = seconds
        self.ok = True
        self.started: list[float] = []

    def collect(self) -> Result:
        self.started.append(self.clock.now)
        self.clock.now += self.seconds
        return Result(len(self.started), self.ok)


def shared(api: Api, cache: float = 0.0, min_interval: float = 0.0) -> SharedCollection[Result]:
    return SharedCollection(
        api.collect, cache, min_interval, clock=api.clock, succeeded=lambda r: r.ok
    )


def scrape_at(collection: SharedCollection[Result], clock: Clock, *times: float) -> list[int]:
    served = []
    for at in times:
        clock.now = max(clock.now, at)
        served.append(collection.get().number)
    return served


def test_min_interval_counts_from_the_start_of_the_last_collection() -> None:
    """Bug caught: MIN_INTERVAL counted from the finish (a 3 s collection would then hold off
    the next one until 8 s, not 5 s)."""
    clock = Clock()
    api = Api(clock, seconds=3)
    collection = shared(api, min_interval=5)
    assert scrape_at(collection, clock, 0, 4.9, 6) == [1, 1, 2]
    assert api.started == [0, 6]


def test_min_interval_boundary_collects_at_exactly_the_interval() -> None:
    clock = Clock()
    api = Api(clock)
    collection = shared(api, min_interval=5)
    assert scrape_at(collection, clock, 0, 4.999, 5) == [1, 1, 2]


def test_a_failure_is_reused_within_min_interval() -> None:
    """Bug caught: a failure never reused: an API outage would cost a collection a scrape."""
    clock = Clock()
    api = Api(clock)
    api.ok = False
    collection = shared(api, min_interval=3600)
    assert scrape_at(collection, clock, 0, 1, 2, 3, 4) == [1] * 5


def test_a_failure_is_never_cached_for_cache_seconds() -> None:
    """Issue 16: with CACHE_SECONDS=30 and MIN_INTERVAL=0, the first scrape after the API came
    back must read it, not be served the failure for 30 s."""
    clock = Clock()
    api = Api(clock)
    collection = shared(api, cache=30, min_interval=0)
    api.ok = False
    assert collection.get().ok is False
    api.ok = True
    clock.now = 1
    assert collection.get().ok is True
    assert api.started == [0, 1]


def test_a_success_is_cached_for_cache_seconds_and_no_longer() -> None:
    clock = Clock()
    api = Api(clock, seconds=1)
    collection = shared(api, cache=30)
    # finished at 1: reused while younger than 30 s, that is until 31
    assert scrape_at(collection, clock, 0, 30.9, 31) == [1, 1, 2]


def test_no_cache_and_no_interval_collects_every_scrape() -> None:
    clock = Clock()
    api = Api(clock)
    collection = shared(api)
    assert scrape_at(collection, clock, 0, 0, 0) == [1, 2, 3]


def test_concurrent_scrapes_never_collect_at_the_same_time() -> None:
    """Bug caught: every scrape made its own collection (no single flight): a dashboard's
    burst of scrapes would become a burst of signed API reads."""
    in_flight = InFlight()

    def collect() -> Result:
        with in_flight:
            time.sleep(0.05)
        return Result(1)

    collection = SharedCollection(collect)
    threads = [threading.Thread(target=collection.get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert in_flight.most == 1


def scrape_behind_a_raising_collection() -> tuple[int, list[BaseException]]:
    """A scrape whose collection raises, and a second scrape soon after it: the collections
    made, and what the second scrape raised."""
    started, go, calls = threading.Event(), threading.Event(), []
    raised: list[BaseException] = []

    def collect() -> Result:
        calls.append(1)
        started.set()
        go.wait(10)
        raise ValueError("a bug")

    collection: SharedCollection[Result] = SharedCollection(collect)

    def scrape(into: list[BaseException]) -> None:
        try:
            collection.get()
        except BaseException as error:  # reported to the test
            into.append(error)

    leader = threading.Thread(target=scrape, args=([],))
    leader.start()
    started.wait(10)
    follower = threading.Thread(target=scrape, args=(raised,))
    follower.start()
    time.sleep(0.02)
    go.set()
    leader.join()
    follower.join()
    return len(calls), raised


def test_scrapes_waiting_on_a_collection_that_raised_raise_too() -> None:
    """Bug caught: a scrape that waited for a collection which raised (a bug) served nothing
    or an empty result instead of an error: the handler answers it 500 and logs it."""
    waited = 0
    for _ in range(20):  # rounds where the second scrape came while the first was in flight
        calls, raised = scrape_behind_a_raising_collection()
        if calls == 1:
            waited += 1
            assert [repr(error) for error in raised] == [
                "RuntimeError('the shared collection failed unexpectedly')"
            ]
    assert waited > 0
