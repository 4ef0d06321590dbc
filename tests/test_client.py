"""The client as a whole, without sockets: signed pages, retries, paging and fan-out together."""

from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import Future
from types import FrameType, TracebackType
from typing import Any

import pytest
import requests

from exporter.errors import HTTPStatusError, RequestTimeoutError, ThrottledError
from exporter.nsml.client import NsmlClient, Pace
from tests.helpers.concurrency import InFlight
from tests.helpers.http import FakeAdapter
from tests.helpers.runs import api_run, fetch_runs
from tests.helpers.settings import make_settings


def pages_of(count: int) -> list[dict[str, Any]]:
    return [api_run("p1", str(n)) for n in range(count, 0, -1)]


def serve(runs: list[dict[str, Any]]) -> Any:
    def handler(page: int, size: int) -> tuple[int, Any]:
        return 200, {"runList": runs[(page - 1) * size : page * size], "totalCount": len(runs)}

    return handler


def cycles_of_the_client() -> list[object]:
    """What a full collection frees that the client's reading made: the frames of its code, the
    errors and tracebacks through them, its futures. Garbage another thread makes meanwhile (a
    server of a test before, winding down) is not counted."""

    def ours(thing: object) -> bool:
        if isinstance(thing, FrameType):
            return "/exporter/nsml/" in thing.f_code.co_filename
        if isinstance(thing, TracebackType):
            return ours(thing.tb_frame)
        if isinstance(thing, BaseException):
            return thing.__traceback__ is not None and ours(thing.__traceback__)
        return isinstance(thing, Future)

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [thing for thing in gc.garbage if ours(thing)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_429_is_retried_then_the_page_is_read() -> None:
    answers = iter(
        [
            (429, {"error": {"errorCode": "420", "message": "Rate Limited"}}),
            (200, {"runList": [api_run("p1", "1")], "totalCount": 1}),
        ]
    )
    adapter = FakeAdapter(lambda page, size: next(answers))
    client = NsmlClient(make_settings(retries=1), adapter=adapter)
    assert len(fetch_runs(client, time.monotonic() + 30).runs) == 1
    assert adapter.pages == [1, 1]


def test_retries_are_bounded_by_the_setting() -> None:
    adapter = FakeAdapter(lambda page, size: (429, {"error": {"errorCode": "420"}}))
    client = NsmlClient(make_settings(retries=2), adapter=adapter)
    with pytest.raises(ThrottledError, match="HTTP 429"):
        fetch_runs(client, time.monotonic() + 30)
    assert adapter.pages == [1, 1, 1]


@pytest.mark.parametrize("failure", [None, "status", "timeout"])
def test_a_collection_leaves_nothing_for_the_cycle_collector(failure: str | None) -> None:
    """A reference cycle through a failed page's error (its traceback, or a future's) would keep
    every page read so far alive until a full GC (seen: +38 MB per timed-out scrape at 100,000
    runs)."""
    runs = pages_of(500)
    pages = serve(runs)

    def handler(page: int, size: int) -> tuple[int, Any]:
        if page == 3 and failure == "status":
            return 400, {"error": {"errorCode": 100, "message": "Bad Request Exception"}}
        if page == 3 and failure == "timeout":
            raise TimeoutError("timed out")  # as a socket read would
        return pages(page, size)  # type: ignore[no-any-return]

    client = NsmlClient(make_settings(page_size=50, retries=0), adapter=FakeAdapter(handler))

    def collect() -> None:
        try:
            fetch_runs(client, deadline=time.monotonic() + 30)
        except (HTTPStatusError, RequestTimeoutError):
            assert failure is not None

    collect()  # the pool's threads start
    gc.collect()
    gc.disable()
    try:
        collect()
        assert cycles_of_the_client() == []
    finally:
        gc.enable()
        client.close()


def test_a_requests_timeout_is_the_shorter_of_request_timeout_and_the_time_left() -> None:
    """Bug caught (issue 27): a request given REQUEST_TIMEOUT whatever the collection's time
    left (a scrape then waits past COLLECT_TIMEOUT for a slow page), or the time left however
    long (one hung request eats the whole collection's time)."""
    timeouts: list[float] = []

    class Timed(FakeAdapter):
        def send(
            self, request: requests.PreparedRequest, *args: Any, **kw: Any
        ) -> requests.Response:
            timeouts.append(kw["timeout"])
            return super().send(request, *args, **kw)

    page = {"runList": [], "totalCount": 0}
    client = NsmlClient(
        make_settings(request_timeout=2, retries=0), adapter=Timed(lambda n, size: (200, page))
    )
    try:
        client.get_page(1, time.monotonic() + 60)  # plenty of time left: REQUEST_TIMEOUT
        client.get_page(1, time.monotonic() + 0.5)  # half a second left: that
    finally:
        client.close()
    assert timeouts[0] == 2
    assert 0 < timeouts[1] <= 0.5  # what was left, not REQUEST_TIMEOUT


def test_a_run_exists_until_its_detail_answers_404(simulator: Any) -> None:
    """Bugs caught: a run taken for gone on any error (a 500 would drop it from the store), a
    404 raised as a failure (a deleted run kept for ever), or the question asked without its
    deadline or retries."""
    from tests.helpers.runs import static_runs

    simulator.sim.set_runs(static_runs(3))
    client = NsmlClient(make_settings(base_url=simulator.base_url, retries=1))
    run = simulator.sim.runs[0]
    deadline = time.monotonic() + 10
    try:
        assert client.run_exists(run.project_id, run.run_name, deadline) is True
        assert client.run_exists(run.project_id, "no-such-run", deadline) is False
        simulator.sim.resource_faults["run"] = 500
        with pytest.raises(HTTPStatusError) as raised:
            client.run_exists(run.project_id, run.run_name, deadline)
        assert raised.value.status == 500
        with pytest.raises(RequestTimeoutError):
            client.run_exists(run.project_id, run.run_name, time.monotonic() - 1)
    finally:
        client.close()


class Waits(threading.Event):
    """A stop event that notes how long it was asked to wait, and returns at once."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return False


def test_the_pace_waits_every_fraction_of_a_second_it_owes() -> None:
    """Bug caught: only waits over a second taken (READ_RATE=8 would then not pace at all:
    each request owes an eighth of a second)."""
    now = [0.0]
    pace = Pace(rate=8, burst=1, clock=lambda: now[0])
    stop = Waits()
    for _ in range(3):
        pace.wait(stop)
    assert stop.waits == [pytest.approx(0.125), pytest.approx(0.25)]


def test_pages_are_read_on_named_threads_at_most_concurrency_at_once() -> None:
    """Bugs caught: the page pool sized by Python's default (up to 32 requests at once) or
    its threads unnamed (a py-spy dump says "ThreadPoolExecutor-0_3")."""
    in_flight, names = InFlight(), set()

    def page(number: int, size: int) -> tuple[int, Any]:
        names.add(threading.current_thread().name.rsplit("_", 1)[0])
        with in_flight:
            time.sleep(0.01)
        runs = [api_run("p", str(n)) for n in range((number - 1) * size, number * size)]
        return 200, {"runList": runs if number <= 8 else [], "totalCount": 8 * size}

    client = NsmlClient(make_settings(page_size=10, concurrency=2), adapter=FakeAdapter(page))
    try:
        read = fetch_runs(client, deadline=time.monotonic() + 30)
    finally:
        client.close()
    assert len(read.runs) == 80
    assert in_flight.most <= 2
    assert names - {"MainThread"} == {"nsml-page"}  # the first page is read by the caller
