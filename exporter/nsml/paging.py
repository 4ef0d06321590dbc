"""Paging through the run list, and the rules that keep an inconsistent API from lying to us.

`read_run_list` is a plain function of "get page N": it knows nothing of HTTP. The first page
gives `totalCount`; the others are read with `map_pages` (the builtin `map`, or an executor's
`map` to read them concurrently). Runs are deduplicated by (`projectId`, `runName`), and the pages
are checked against each other and against `totalCount`, so that an API that ignores `page`,
pages forever, or lies about its size fails loudly (`inconsistent`) instead of serving wrong
numbers. What the docs leave open (pages from 0 or 1, a server-side cap on `pageSize`, runs added
while we page) is followed rather than assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import TypeVar

from ..errors import HTTPStatusError, InconsistentPagingError
from .models import Run, RunPage

RunKey = tuple[str, str]
#: A run's identity, (projectId, runName).
run_key: Callable[[Run], RunKey] = itemgetter("projectId", "runName")

T = TypeVar("T")
GetPage = Callable[[int], RunPage]
MapPages = Callable[[GetPage, Iterable[int]], Iterator[RunPage]]


@dataclass(frozen=True, slots=True)
class RunList:
    """The whole run list as read by one collection."""

    runs: dict[RunKey, Run]
    total_count: int
    pages: int


def _keys(page: RunPage) -> list[RunKey]:
    return list(map(run_key, page["runList"]))


def first_page_hint(first_page: int) -> str:
    other = 1 - first_page if first_page in (0, 1) else 1
    return f" (if the API numbers pages from {other}, set FIRST_PAGE={other})"


def read_run_list(
    get_page: GetPage, *, first_page: int, page_size: int, map_pages: MapPages = map
) -> RunList:
    """Every page of the run list, checked for consistency; raises `CollectionError`."""
    hint = first_page_hint(first_page)
    try:
        first = get_page(first_page)
    except HTTPStatusError as error:
        if error.status != 400 or first_page != 0:
            raise
        # A 1-based API refuses page 0 outright.
        raise HTTPStatusError(f"{error}{hint}", status=400) from None
    totals = [first["totalCount"]]
    if not first["runList"]:
        if first["totalCount"]:
            raise InconsistentPagingError(
                f"page {first_page} is empty but totalCount is {first['totalCount']}{hint}"
            )
        return RunList({}, 0, 1)
    returned = len(first["runList"])
    # The server's real page size: it may cap pageSize below what we asked, or ignore it.
    step = returned if returned < first["totalCount"] else page_size
    planned = max(1, math.ceil(first["totalCount"] / step))
    rest = range(first_page + 1, first_page + planned)
    pages = {first_page: first, **dict(zip(rest, map_pages(get_page, rest), strict=True))}
    totals.extend(page["totalCount"] for page in pages.values())
    # The list grew while we read it: follow it, but never forever.
    bound = 2 * planned + 2
    fetched = planned
    while (
        fetched < math.ceil(max(totals) / step)
        and len(pages[first_page + fetched - 1]["runList"]) >= step
    ):
        if fetched >= bound:
            raise InconsistentPagingError(
                f"the API kept returning pages past totalCount ({first['totalCount']}) "
                f"after {fetched} pages"
            )
        page = get_page(first_page + fetched)
        pages[first_page + fetched] = page
        totals.append(page["totalCount"])
        fetched += 1

    runs: dict[RunKey, Run] = {}
    first_keys = _keys(first)
    for number in sorted(pages):
        page = pages[number]
        if number != first_page and len(page["runList"]) == step and _keys(page) == first_keys:
            raise InconsistentPagingError(
                f"the API ignores page: page {number} returned the same runs as page "
                f"{first_page}{hint}"
            )
        runs.update(zip(map(run_key, page["runList"]), page["runList"], strict=True))
    if len(runs) < max(totals):
        # Runs were added (or removed) at the head while we paged, shifting others past what
        # we read: read the head once more before calling the list inconsistent.
        again = get_page(first_page)
        totals.append(again["totalCount"])
        runs.update(zip(map(run_key, again["runList"]), again["runList"], strict=True))
        if len(runs) < min(totals):
            raise InconsistentPagingError(
                f"read {len(runs)} distinct runs but totalCount is {totals[-1]}{hint}"
            )
    if len(runs) > max(totals):
        raise InconsistentPagingError(
            f"read {len(runs)} distinct runs but totalCount is at most {max(totals)}: "
            "the API returns runs past totalCount"
        )
    return RunList(runs, totals[-1], len(pages))


def read_list(
    get_page: Callable[[int], tuple[list[T], int]],
    *,
    first_page: int,
    page_size: int,
    max_pages: int = 100,
) -> list[T]:
    """Every item of a plainly paged list (projects, a run's nodes), page after page, until
    `totalCount` items are read or a page comes back short. More than `max_pages` pages is an
    API that pages forever."""
    items: list[T] = []
    for page in range(first_page, first_page + max_pages):
        got, total = get_page(page)
        items += got
        if len(got) < page_size or len(items) >= total:
            return items
    raise InconsistentPagingError(f"still more items after {max_pages} pages of {page_size}")
