"""Paging through the run list as a plain function of "get page N": no HTTP here.

Counts, dedupe, 0-based pages, a capped page size, concurrency, and APIs that misbehave.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.errors import HTTPStatusError, InconsistentPagingError
from exporter.nsml.models import Run, RunPage, decode_page, to_timestamp
from exporter.nsml.paging import (
    RunKey,
    RunList,
    SeenRuns,
    read_head,
    read_list,
    read_run_list,
    run_key,
)
from tests.conftest import api_run

Handler = Callable[[int, int], tuple[int, Any]]
UTC = ZoneInfo("UTC")


def paged(runs: list[dict[str, Any]], first: int = 1, total: int | None = None) -> Handler:
    def handler(page: int, size: int) -> tuple[int, Any]:
        index = page - first
        return 200, {
            "runList": runs[index * size : (index + 1) * size],
            "totalCount": len(runs) if total is None else total,
        }

    return handler


def runs_of(count: int, project: str = "p1") -> list[dict[str, Any]]:
    return [api_run(project, str(n)) for n in range(count, 0, -1)]


class Pages:
    """`get_page` from a handler: records the pages asked for; a non-200 is an HTTP error."""

    def __init__(self, handler: Handler, page_size: int) -> None:
        self.handler = handler
        self.page_size = page_size
        self.pages: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, page: int) -> RunPage:
        with self.lock:
            self.pages.append(page)
        status, body = self.handler(page, self.page_size)
        if status != 200:
            raise HTTPStatusError(f"page {page}: HTTP {status}", status=status)
        return decode_page(json.dumps(body).encode())


def created(run: Run) -> float:
    return to_timestamp(run["createTime"], UTC)


class Read:
    """A full read's result, with the runs it took (in the order taken)."""

    def __init__(self) -> None:
        self.taken: list[Run] = []
        self.result: RunList | None = None

    def take(self, run: Run) -> None:
        self.taken.append(run)

    @property
    def runs(self) -> dict[RunKey, Run]:
        return {run_key(run): run for run in self.taken}

    @property
    def total_count(self) -> int:
        assert self.result is not None
        return self.result.total_count


def read(
    pages: Callable[[int], RunPage], first_page: int = 1, page_size: int = 10, **kw: Any
) -> Read:
    got = Read()
    got.result = read_run_list(
        pages, first_page=first_page, page_size=page_size, take=got.take, created=created, **kw
    )
    return got


def fetch(
    handler: Handler, page_size: int = 10, first_page: int = 1, concurrency: int = 1
) -> tuple[Read, Pages]:
    pages = Pages(handler, page_size)
    with ThreadPoolExecutor(concurrency) as pool:
        result = read(pages, first_page=first_page, page_size=page_size, map_pages=pool.map)
    return result, pages


@pytest.mark.parametrize(
    ("count", "size", "requests"),
    [
        (0, 10, 1),
        (1, 10, 1),
        (10, 10, 1),
        (30, 10, 3),
        (31, 10, 4),
        (250, 100, 3),
    ],
)
def test_reads_every_run_with_the_fewest_requests(count: int, size: int, requests: int) -> None:
    result, api = fetch(paged(runs_of(count)), page_size=size)
    assert len(result.runs) == count
    assert result.total_count == count
    assert sorted(api.pages) == list(range(1, requests + 1))


def test_zero_based_paging() -> None:
    result, api = fetch(paged(runs_of(25), first=0), page_size=10, first_page=0)
    assert len(result.runs) == 25
    assert sorted(api.pages) == [0, 1, 2]


def test_one_based_setting_against_a_zero_based_api_fails_with_a_hint() -> None:
    with pytest.raises(InconsistentPagingError, match="FIRST_PAGE=0"):
        fetch(paged(runs_of(25), first=0), page_size=10)


def test_runs_with_the_same_name_in_two_projects_are_two_runs() -> None:
    runs = [api_run("p1", "1"), api_run("p2", "1")]
    result, _ = fetch(paged(runs), page_size=10)
    assert set(result.runs) == {("p1", "1"), ("p2", "1")}


def test_a_run_seen_twice_across_pages_counts_once() -> None:
    # A new run is inserted at the head after page 1 is read: run "20" moves to page 2.
    base = runs_of(20)
    lock = threading.Lock()
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        with lock:
            served.append(page)
            current = base if len(served) == 1 else [api_run("p1", "21"), *base]
        return paged(current)(page, size)

    result, api = fetch(handler, page_size=10, concurrency=1)
    assert api.pages == [1, 2, 3, 1]  # page 3 follows the growth, then the head again
    names = {key[1] for key in result.runs}
    # Every run exists once; the new run is picked up by re-reading the head.
    assert names == {str(n) for n in range(1, 22)}
    assert result.total_count == 21


def test_runs_vanishing_between_pages_do_not_fail_the_collection() -> None:
    base = runs_of(20)
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        served.append(page)
        current = base if len(served) == 1 else base[1:]  # the newest run was deleted
        return paged(current)(page, size)

    result, _ = fetch(handler, page_size=10, concurrency=1)
    # Every surviving run is counted (the head is re-read); the deleted one was seen before.
    assert {str(n) for n in range(1, 20)} <= {key[1] for key in result.runs}
    assert result.total_count == 19


def test_an_api_that_ignores_page_is_inconsistent() -> None:
    runs = runs_of(30)

    def handler(page: int, size: int) -> tuple[int, Any]:
        return 200, {"runList": runs[:size], "totalCount": 30}

    with pytest.raises(InconsistentPagingError, match="ignores page"):
        fetch(handler, page_size=10)


def test_an_api_that_pages_forever_is_inconsistent() -> None:
    def handler(page: int, size: int) -> tuple[int, Any]:
        return 200, {
            "runList": [api_run("p1", f"{page}-{n}") for n in range(size)],
            "totalCount": 25,
        }

    with pytest.raises(InconsistentPagingError, match="past totalCount"):
        fetch(handler, page_size=10)


def test_an_api_whose_total_keeps_growing_is_bounded() -> None:
    def handler(page: int, size: int) -> tuple[int, Any]:
        return 200, {
            "runList": [api_run("p1", f"{page}-{n}") for n in range(size)],
            "totalCount": 20 + page * size,
        }

    pages = Pages(handler, 10)
    with pytest.raises(InconsistentPagingError):
        read(pages, first_page=1, page_size=10)
    # The bound is derived from the first totalCount (3 pages -> at most 8), not followed forever.
    assert len(pages.pages) <= 8


@pytest.mark.parametrize("total", [15, 50])
def test_a_total_count_that_lies_is_inconsistent(total: int) -> None:
    # (A total that understates by whole pages, e.g. 10 of 30, matches the pages it implies:
    # only one more request per collection could catch it, and we do not pay that.)
    with pytest.raises(InconsistentPagingError):
        fetch(paged(runs_of(30), total=total), page_size=10)


def test_a_server_that_caps_page_size_is_followed() -> None:
    runs = runs_of(45)

    def handler(page: int, size: int) -> tuple[int, Any]:
        size = min(size, 20)  # the server's own maximum
        return paged(runs)(page, size)

    result, api = fetch(handler, page_size=100)
    assert len(result.runs) == 45
    assert sorted(api.pages) == [1, 2, 3]


def test_pages_after_the_first_are_fetched_concurrently() -> None:
    runs = runs_of(50)
    active = 0
    peak = 0
    lock = threading.Lock()

    def handler(page: int, size: int) -> tuple[int, Any]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return paged(runs)(page, size)

    result, _ = fetch(handler, page_size=5, concurrency=4)
    assert len(result.runs) == 50
    assert peak == 4


def test_a_one_based_api_refusing_page_0_names_first_page_1() -> None:
    def handler(page: int, size: int) -> tuple[int, Any]:
        if page < 1:
            return 400, {"error": {"errorCode": 100, "message": "Bad Request Exception"}}
        return paged(runs_of(25))(page, size)

    with pytest.raises(HTTPStatusError, match=r"HTTP 400 .*set FIRST_PAGE=1"):
        fetch(handler, first_page=0)


def test_uneven_pages_are_all_in_flight_at_once() -> None:
    """31 runs, 10 per page, CONCURRENCY 3: pages 2, 3 and 4 are asked for together."""
    runs = runs_of(31)
    in_flight: set[int] = set()
    together: list[set[int]] = []
    lock = threading.Lock()
    all_there = threading.Barrier(3, timeout=5)

    def handler(page: int, size: int) -> tuple[int, Any]:
        if page > 1:
            with lock:
                in_flight.add(page)
            all_there.wait()  # breaks (and fails the read) unless three pages wait here at once
            with lock:
                together.append(set(in_flight))
        return paged(runs)(page, size)

    result, pages = fetch(handler, page_size=10, concurrency=3)
    assert len(result.runs) == 31
    assert sorted(pages.pages) == [1, 2, 3, 4]
    assert {2, 3, 4} in together


def test_a_400_for_page_1_carries_no_first_page_hint() -> None:
    """Bug caught: the FIRST_PAGE hint added to any 400. With FIRST_PAGE=1 a 400 is about
    something else (PAGE_SIZE, the URL): pointing at FIRST_PAGE would mislead."""

    def handler(page: int, size: int) -> tuple[int, Any]:
        return 400, {"error": {"errorCode": 100, "message": "Bad Request Exception"}}

    with pytest.raises(HTTPStatusError) as raised:
        fetch(handler, first_page=1)
    assert "FIRST_PAGE" not in str(raised.value)


# -- the list's order, its head, and plainly paged lists -------------------------------------


def timed_runs(count: int, project: str = "p1") -> list[dict[str, Any]]:
    """`count` runs a minute apart, newest first."""
    return [
        api_run(project, str(n), created=f"2024-09-03 {10 + n // 60:02d}:{n % 60:02d}:00")
        for n in range(count, 0, -1)
    ]


def test_a_newest_first_list_is_found_so_even_with_runs_created_while_it_is_read() -> None:
    """Bug caught: the seam check reading a run pushed from the previous page (new runs at the
    head) as disorder, so head reads never start on a busy list."""
    base = timed_runs(30)
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        served.append(page)
        newer = [api_run("p1", f"new-{n}", created="2024-09-03 12:00:00") for n in range(3)]
        return paged(base if len(served) == 1 else newer + base)(page, size)

    result, _ = fetch(handler, page_size=10)
    assert result.result is not None and result.result.newest_first


@pytest.mark.parametrize(
    ("order", "newest_first"),
    [("newest", True), ("oldest", False), ("seam", False), ("shuffled", False)],
)
def test_the_order_is_checked_within_pages_and_at_their_seams(
    order: str, newest_first: bool
) -> None:
    """Bug caught: the order assumed (or checked within pages only: two pages each sorted but
    the second starting newer than the first ends)."""
    runs = timed_runs(30)
    if order == "oldest":
        runs = runs[::-1]
    elif order == "seam":
        runs = runs[10:20] + runs[:10] + runs[20:]  # each page sorted, pages 1 and 2 swapped
    elif order == "shuffled":
        runs = runs[1::2] + runs[::2]
    result, _ = fetch(paged(runs), page_size=10)
    assert result.result is not None and result.result.newest_first is newest_first
    assert len(result.runs) == 30


def read_head_of(
    runs: list[dict[str, Any]], since: str, known: set[tuple[str, str]], max_pages: int = 10
) -> tuple[list[str], int, int, list[int]]:
    """What `read_head` takes from `runs` (10 a page): names, pages read, total, pages asked."""
    pages = Pages(paged(runs), 10)
    taken: list[Run] = []
    count, total = read_head(
        pages,
        first_page=1,
        since=datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp(),
        known=known.__contains__,
        take=taken.append,
        created=created,
        max_pages=max_pages,
    )
    return [run["runName"] for run in taken], count, total, pages.pages


def test_the_head_is_read_down_to_the_views_newest_run() -> None:
    """Bugs caught: stopping before the view's newest second (a run created in that second
    after the read lost), or taking a run the view has (counted twice)."""
    runs = timed_runs(40)  # run n created at 10:00 + n minutes; newest is "40"
    # The view's newest run is "25" (10:25): "25" is known, "26".."40" are new.
    names, count, total, asked = read_head_of(runs, "2024-09-03 10:25:00", {("p1", "25")})
    assert names == [str(n) for n in range(40, 25, -1)]
    assert (count, total, asked) == (2, 40, [1, 2])


def test_a_run_created_in_the_views_newest_second_but_not_in_it_is_new() -> None:
    runs = [*timed_runs(5), api_run("p1", "late", created="2024-09-03 10:05:00")]
    runs = sorted(runs, key=lambda r: r["createTime"], reverse=True)
    names, *_ = read_head_of(runs, "2024-09-03 10:05:00", {("p1", "5")})
    assert names == ["late"]


def test_a_head_read_is_bounded() -> None:
    """Bug caught: a burst of new runs read page after page without end."""
    names, count, _, asked = read_head_of(
        timed_runs(200), "2024-09-03 09:00:00", set(), max_pages=3
    )
    assert (len(names), count, asked) == (30, 3, [1, 2, 3])


@pytest.mark.parametrize(("cap", "items"), [(3, 6), (2, 84), (10, 25), (100, 7)])
def test_a_plain_list_follows_a_capped_page_size(cap: int, items: int) -> None:
    """Bug caught: a list cut at the first short page when the gateway serves fewer items than
    asked (3 of 6 projects served as the whole list)."""
    every = list(range(items))
    asked: list[int] = []

    def page(number: int) -> tuple[list[int], int]:
        asked.append(number)
        return every[(number - 1) * cap : number * cap], items

    assert read_list(page, first_page=1, page_size=100) == every
    assert len(asked) == max(1, -(-items // cap))


def test_a_plain_list_with_a_lying_total_stops_at_the_short_page() -> None:
    """Bug caught: a totalCount that overstates the list costing page after page."""
    asked: list[int] = []

    def page(number: int) -> tuple[list[int], int]:
        asked.append(number)
        return list(range(10))[(number - 1) * 4 : number * 4], 1000

    assert read_list(page, first_page=1, page_size=4) == list(range(10))
    assert asked == [1, 2, 3]


def test_seen_runs_keep_names_that_only_look_alike_apart() -> None:
    """Bug caught: "01" kept as the number 1, merging two runs into one."""
    seen = SeenRuns()
    assert [seen.add(("p1", name)) for name in ("1", "01", "1", "\uff11", "p-1")] == [
        True,
        True,
        False,
        True,
        True,
    ]
    assert len(seen) == 4
    assert ("p1", "01") in seen and ("p2", "1") not in seen
