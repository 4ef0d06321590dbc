"""Paging through the run list as a plain function of "get page N": no HTTP here.

Counts, 0-based pages, a capped page size, concurrency, a list that changes while it is paged
(never an error: the store settles runs by identity), resuming a read, the head, and APIs whose
pages contradict their own totalCount.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import HTTPStatusError, InconsistentPagingError
from exporter.nsml.models import Run, RunPage, decode_page, to_timestamp
from exporter.nsml.paging import (
    Progress,
    RunKey,
    RunList,
    read_head,
    read_list,
    read_run_list,
    run_key,
)
from tests.helpers.runs import api_run

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

    def take(self, runs: list[Run]) -> None:
        self.taken.extend(runs)

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
        (10, 10, 2),  # a full last page: one more, for runs past an understated totalCount
        (30, 10, 4),
        (31, 10, 4),
        (250, 100, 3),
    ],
)
def test_reads_every_run_with_the_fewest_requests(count: int, size: int, requests: int) -> None:
    """Bugs caught: a page too many or too few asked for; the read's page count (its log line)
    off by one for a list on one short page (`start + 2` as the first page past the plan)."""
    result, api = fetch(paged(runs_of(count)), page_size=size)
    assert len(result.runs) == count
    assert result.total_count == count
    assert sorted(api.pages) == list(range(1, requests + 1))
    assert result.result is not None and result.result.pages == requests


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


def test_a_run_pushed_across_pages_is_handed_over_twice_and_the_read_goes_on() -> None:
    """Bugs caught: a read failing because the list grew under it (issue 26: every read failed
    under churn), or stopping at the first totalCount instead of following the growth."""
    base = runs_of(20)
    lock = threading.Lock()
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        with lock:
            served.append(page)
            current = base if len(served) == 1 else [api_run("p1", "21"), *base]
        return paged(current)(page, size)

    result, api = fetch(handler, page_size=10, concurrency=1)
    assert api.pages == [1, 2, 3]  # page 3 follows the growth; no re-read of the head
    names = [run["runName"] for run in result.taken]
    assert names.count("11") == 2  # pushed from page 1 onto page 2: the store counts it once
    assert set(names) == {str(n) for n in range(1, 21)}  # "21" is the head read's to find
    assert result.total_count == 21


def test_a_run_pulled_back_onto_a_page_already_read_is_missed_and_nothing_fails() -> None:
    """Bug caught: a deletion during the read failing it as inconsistent (issue 26). The run
    pulled back is missed by this read; the next one has it."""
    base = runs_of(20)
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        served.append(page)
        current = base if len(served) == 1 else base[1:]  # the newest run was deleted
        return paged(current)(page, size)

    result, _ = fetch(handler, page_size=10, concurrency=1)
    assert {key[1] for key in result.runs} == {str(n) for n in range(1, 21)} - {"10"}
    assert result.total_count == 19


def test_a_failed_read_resumes_at_the_page_that_failed() -> None:
    """Bugs caught: a failed read starting again from page 1 (a deep page that keeps failing
    then makes nsml_up flap, issue 26), or re-reading pages it had."""
    runs = runs_of(50)
    failing = [True]

    def handler(page: int, size: int) -> tuple[int, Any]:
        if page == 4 and failing[0]:
            return 500, {}
        return paged(runs)(page, size)

    pages = Pages(handler, 10)
    progress = Progress()
    taken: list[Run] = []
    with pytest.raises(HTTPStatusError):
        read_run_list(
            pages,
            first_page=1,
            page_size=10,
            take=taken.extend,
            created=created,
            progress=progress,
        )
    assert (progress.pages, progress.page_size, progress.planned) == (3, 10, 5)
    failing[0] = False
    result = read_run_list(
        pages, first_page=1, page_size=10, take=taken.extend, created=created, progress=progress
    )
    assert pages.pages == [1, 2, 3, 4, 4, 5, 6]  # 6: the last page was full
    assert [run["runName"] for run in taken] == [str(n) for n in range(50, 0, -1)]
    assert (result.pages, result.total_count, progress.pages) == (3, 50, 6)


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


def test_a_total_count_that_overstates_the_list_is_inconsistent() -> None:
    """Bug caught: a list that ends before its own totalCount says served as complete."""
    with pytest.raises(InconsistentPagingError, match=r"page 4 lists 0 runs .* 20 more follow"):
        fetch(paged(runs_of(30), total=50), page_size=10)


@pytest.mark.parametrize("total", [15, 20])
def test_runs_past_an_understated_total_count_are_read_and_counted(total: int) -> None:
    """Bug caught: runs past totalCount left unread (issue 26: 250 runs served as 200 with
    nsml_up 1). A full last page is followed to the list's real end."""
    result, pages = fetch(paged(runs_of(30), total=total), page_size=10)
    assert len(result.runs) == 30
    assert result.result is not None and result.result.past_total == 30 - total
    assert pages.pages == [1, 2, 3, 4]


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
    runs: list[dict[str, Any]], known: set[tuple[str, str]], max_pages: int = 10
) -> tuple[list[str], int, int, list[int]]:
    """What `read_head` takes from `runs` (10 a page): names, pages read, total, pages asked."""
    pages = Pages(paged(runs), 10)
    taken: list[Run] = []
    count, total = read_head(
        pages, first_page=1, known=known.__contains__, take=taken.extend, max_pages=max_pages
    )
    return [run["runName"] for run in taken], count, total, pages.pages


def test_the_head_is_read_down_to_the_first_page_ending_with_a_known_run() -> None:
    """Bugs caught: stopping at the first page (a burst of new runs past it lost, issue 26),
    or reading past a page that ends with a known run (a full read on every head read)."""
    runs = timed_runs(40)  # newest first: "40" down to "1"
    known = {("p1", str(n)) for n in range(1, 26)}  # "26".."40" are new
    names, count, total, asked = read_head_of(runs, known)
    assert names == [str(n) for n in range(40, 20, -1)]  # pages 1 and 2, whole
    assert (count, total, asked) == (2, 40, [1, 2])


def test_a_run_dated_in_the_future_at_the_head_hides_no_new_run() -> None:
    """Bug caught: the head read stopping at a run newer than the view's newest by time: one
    run dated in the future hid every new run (issue 26)."""
    future = api_run("p1", "future", created="2030-01-01 00:00:00")
    runs = [future, *timed_runs(30)]
    known = {("p1", "future")} | {("p1", str(n)) for n in range(1, 28)}
    names, count, *_ = read_head_of(runs, known)
    assert {"28", "29", "30"} <= set(names)
    assert count == 1


def test_a_head_read_is_bounded() -> None:
    """Bug caught: a head that never reaches a known run read page after page without end."""
    names, count, _, asked = read_head_of(timed_runs(200), set(), max_pages=3)
    assert (len(names), count, asked) == (30, 3, [1, 2, 3])


def test_a_head_read_stops_at_the_lists_end() -> None:
    """Bug caught: a short list read again past its last page."""
    names, count, _, asked = read_head_of(timed_runs(15), set())
    assert (len(names), count, asked) == (15, 2, [1, 2])


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


# -- written for mutmut's survivors: each fails with one mutant of paging.py --------------------


def test_an_empty_list_is_one_page_newest_first_and_nothing_to_follow() -> None:
    """Bugs caught: an empty list reported as more pages, another page size, not newest first,
    or its progress off (a resumed read would skip pages)."""
    pages = Pages(paged([]), 10)
    progress = Progress()
    result = read_run_list(
        pages, first_page=1, page_size=10, take=lambda _: None, created=created, progress=progress
    )
    assert result == RunList(0, 1, 10, True)
    assert (progress.pages, progress.page_size, progress.total_count) == (1, 10, 0)


def test_an_empty_first_page_names_the_page_and_the_total() -> None:
    with pytest.raises(InconsistentPagingError, match=r"^page 1 is empty but totalCount is 25 "):
        fetch(paged([], total=25))


def test_a_refused_page_0_stays_a_400() -> None:
    """Bug caught: the 400 for page 0, rewritten with its hint, losing its status (the page
    size fallback and the error's counting read it)."""

    def handler(page: int, size: int) -> tuple[int, Any]:
        if page < 1:
            return 400, {"error": {"errorCode": 100, "message": "Bad Request Exception"}}
        return paged(runs_of(25))(page, size)

    with pytest.raises(HTTPStatusError) as raised:
        fetch(handler, first_page=0)
    assert raised.value.status == 400


@pytest.mark.parametrize(("count", "total", "past"), [(35, 15, 20), (30, 30, 0), (21, 20, 1)])
def test_runs_past_total_count_are_counted_exactly(count: int, total: int, past: int) -> None:
    """Bugs caught: the runs past totalCount miscounted where the last page is partial, or
    counted for an API that tells the truth."""
    result, _ = fetch(paged(runs_of(count), total=total), page_size=10)
    assert result.result is not None and result.result.past_total == past
    assert len(result.runs) == count


def test_how_far_the_list_moved_is_the_spread_of_its_totals() -> None:
    """Bug caught: the head read after a read under churn not told how far to look."""
    base = runs_of(20)
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        served.append(page)
        grown = [api_run("p1", f"new-{n}") for n in range(7)]
        return paged(base if len(served) == 1 else grown + base)(page, size)

    result, _ = fetch(handler, page_size=10)
    assert result.result is not None and result.result.moved == 7


def test_a_burst_larger_than_a_page_between_two_pages_is_no_disorder() -> None:
    """Bug caught: the seam compared across pages whose totalCounts differ (the list changed
    between them): a page of new runs after the burst read as disorder, so no head reads."""
    base = timed_runs(30)
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        served.append(page)
        burst = [
            api_run("p1", f"b{n}", created=f"2024-09-03 12:{59 - n:02d}:00") for n in range(15)
        ]
        return paged(base if len(served) == 1 else burst + base)(page, size)

    result, _ = fetch(handler, page_size=10)
    assert result.result is not None and result.result.newest_first


def test_runs_created_in_the_same_second_are_in_order() -> None:
    """Bugs caught: equal createTimes within a page, or across a seam, taken for disorder."""
    runs = [api_run("p1", str(n), created="2024-09-03 10:00:00") for n in range(25)]
    result, _ = fetch(paged(runs), page_size=10)
    assert result.result is not None and result.result.newest_first


def test_a_page_one_run_short_of_its_total_is_inconsistent_without_a_hint() -> None:
    """Bugs caught: a shortfall of one run passed over, or the FIRST_PAGE hint given where a
    whole page is not what is missing."""
    with pytest.raises(InconsistentPagingError) as raised:
        fetch(paged(runs_of(30), total=31), page_size=10)
    assert str(raised.value).endswith("says 1 more follow")


def test_a_head_read_stops_at_an_exact_number_of_pages() -> None:
    """Bug caught: a list of exactly two pages read for a third."""
    names, count, _, asked = read_head_of(timed_runs(20), set())
    assert (len(names), count, asked) == (20, 2, [1, 2])


def test_a_head_read_stops_at_a_page_ending_with_a_known_run_alone() -> None:
    """Bug caught: the stop looking at another run than the page's last."""
    runs = timed_runs(40)
    _, count, _, asked = read_head_of(runs, {("p1", "21")})  # page 2 ends with "21"
    assert (count, asked) == (2, [1, 2])


def test_a_plain_list_that_never_ends_fails_after_a_hundred_pages() -> None:
    """Bugs caught: the bound moved, or its message lost."""
    asked: list[int] = []

    def page(number: int) -> tuple[list[int], int]:
        asked.append(number)
        return [1, 2], 10**9

    with pytest.raises(InconsistentPagingError, match="still more items after 100 pages of 2"):
        read_list(page, first_page=1, page_size=2)
    assert len(asked) == 100


@pytest.mark.parametrize(("items", "total", "expected"), [([], 3, []), ([7], 3, [7, 7, 7])])
def test_a_plain_list_of_one_a_page_or_none(
    items: list[int], total: int, expected: list[int]
) -> None:
    """Bugs caught: an empty first page read as a page size of 0 (paging on to the bound), or
    a gateway capping pages at one item not followed."""

    def page(number: int) -> tuple[list[int], int]:
        return list(items), total

    assert read_list(page, first_page=1, page_size=100) == expected


def test_a_resumed_read_of_an_api_that_ignores_page_names_the_page_it_resumed_at() -> None:
    runs = runs_of(50)

    def handler(page: int, size: int) -> tuple[int, Any]:
        return 200, {"runList": runs[:size], "totalCount": 50}

    progress = Progress(pages=2, page_size=10)
    with pytest.raises(InconsistentPagingError, match="same runs as page 3 "):
        read_run_list(
            Pages(handler, 10),
            first_page=1,
            page_size=10,
            take=lambda _: None,
            created=created,
            progress=progress,
        )


def test_a_head_read_stops_at_a_short_page_whatever_its_total_says() -> None:
    """Bug caught: a page shorter than the first (the list's end) read past when totalCount
    claims more."""
    pages = Pages(paged(timed_runs(15), total=100), 10)
    read_head(pages, first_page=1, known=lambda key: False, take=lambda _: None, max_pages=10)
    assert pages.pages == [1, 2]


def test_a_page_holding_only_the_page_before_after_a_burst_of_one_page() -> None:
    """Bug caught: the seam check finding no new run on a page (a burst of exactly one page
    between two reads pushed page 1's runs onto page 2) and failing the read."""
    base = timed_runs(30)
    served: list[int] = []

    def handler(page: int, size: int) -> tuple[int, Any]:
        served.append(page)
        burst = [api_run("p1", f"b{n}", created="2024-09-03 12:00:00") for n in range(10)]
        return paged(base if len(served) == 1 else burst + base)(page, size)

    result, _ = fetch(handler, page_size=10)
    assert len(result.runs) == 30 and result.result is not None
    assert result.result.newest_first


@pytest.mark.parametrize(("count", "batched"), [(30, [2, 3, 4]), (31, [2, 3, 4]), (10, [2])])
def test_the_page_that_proves_the_end_is_asked_for_with_the_others(
    count: int, batched: list[int]
) -> None:
    """Bug caught: the page after a full last page asked for only after every other page had
    come back: one more round trip on every read of a list whose length is a multiple of the
    page size (a 10,000-run history read on scrape: 5% of the scrape)."""
    asked: list[list[int]] = []

    def map_pages(get: Callable[[int], RunPage], numbers: Iterable[int]) -> Iterator[RunPage]:
        numbers = list(numbers)
        asked.append(numbers)  # what the pool is given at once
        return map(get, numbers)

    got = read(Pages(paged(runs_of(count)), 10), map_pages=map_pages)
    assert asked == [batched]
    assert len(got.taken) == count


# -- Hypothesis: paging against a model of the list --------------------------------------------


def dated(number: int) -> dict[str, Any]:
    """Run `number`, created `number` minutes after a fixed moment (later runs are newer)."""
    minute = datetime(2024, 9, 3) + timedelta(minutes=number)
    return api_run("p1", str(number), created=minute.strftime("%Y-%m-%d %H:%M:%S"))


@given(
    count=st.integers(0, 50),
    size=st.integers(1, 12),
    cap=st.none() | st.integers(1, 12),
    first_page=st.sampled_from([0, 1]),
    newest_first=st.booleans(),
    shuffle=st.randoms(use_true_random=False),
    additions=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 4)), max_size=3),
)
@settings(max_examples=200, deadline=None)
def test_paging_reads_every_run_of_the_list_whatever_its_shape(
    *,
    count: int,
    size: int,
    cap: int | None,
    first_page: int,
    newest_first: bool,
    shuffle: random.Random,
    additions: list[tuple[int, int]],
) -> None:
    """The model: a list of `count` runs served `size` a page (or fewer, when the gateway caps
    pages at `cap`), newest first or in any order, to which runs are added at the head after
    some pages are served. Bugs caught: a run of the list never handed over (a page skipped,
    the last page not read, a cap not followed), the order misjudged, a list that grows taken
    for an inconsistent one; and a run that was never listed handed over."""
    listed = [dated(n) for n in range(count, 0, -1)]
    if not newest_first:
        shuffle.shuffle(listed)
    if sum(added for _, added in additions) > count:
        additions = []  # more runs added than listed: the guard against endless lists fires
    added_after = dict(additions)
    newest = count
    served = 0
    current = list(listed)

    def get_page(number: int) -> RunPage:
        nonlocal newest, served
        per_page = min(size, cap or size)
        index = number - first_page
        body = {
            "runList": current[index * per_page : (index + 1) * per_page],
            "totalCount": len(current),
        }
        served += 1
        for _ in range(added_after.get(served, 0)):  # created at the head, after this page
            newest += 1
            current.insert(0, dated(newest))
        return decode_page(json.dumps(body).encode())

    taken: list[Run] = []
    result = read_run_list(
        get_page, first_page=first_page, page_size=size, take=taken.extend, created=created
    )
    names = [run["runName"] for run in taken]
    assert {run["runName"] for run in listed} <= set(names)  # nothing listed is lost
    assert set(names) <= {run["runName"] for run in current}  # nothing made up
    if current == listed:  # the list held still: exactly it, in its order, once each
        assert names == [run["runName"] for run in listed]
        assert result.total_count == count
        in_order = all(int(a["runName"]) > int(b["runName"]) for a, b in itertools.pairwise(listed))
        assert result.newest_first == in_order
