"""Paging through the run list, and the rules that keep an inconsistent API from lying to us.

`read_run_list` is a plain function of "get page N": it knows nothing of HTTP. The first page
gives `totalCount`; the others are read with `map_pages` (the builtin `map`, or an ordered map
over a thread pool), in page order, and each distinct run is handed to `take` once: nothing holds
the whole list, so a history of a million runs costs a set of names, not a million dicts.

Runs are deduplicated by (`projectId`, `runName`), and the pages are checked against each other
and against `totalCount`, so that an API that ignores `page`, pages forever, or lies about its size
fails loudly (`inconsistent`) instead of serving wrong numbers. What the docs leave open (pages
from 0 or 1, a server-side cap on `pageSize`, runs added while we page, the list's order) is
followed and checked rather than assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
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
Take = Callable[[Run], None]
Created = Callable[[Run], float]


def _compact(name: str) -> int | str:
    """A run name as it is kept: a canonical decimal (NSML numbers runs in order) as an int,
    which costs half a string; anything else as it is."""
    if name.isascii() and name.isdigit() and len(name) < 19 and (name == "0" or name[0] != "0"):
        return int(name)
    return name


class SeenRuns:
    """The runs one read has taken, compactly: per project, a set of run names."""

    def __init__(self) -> None:
        self._by_project: dict[str, set[int | str]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: RunKey) -> bool:
        names = self._by_project.get(key[0])
        return names is not None and _compact(key[1]) in names

    def add(self, key: RunKey) -> bool:
        """Remember `key`; False when it was there already."""
        names = self._by_project.setdefault(key[0], set())
        name = _compact(key[1])
        if name in names:
            return False
        names.add(name)
        self._count += 1
        return True


@dataclass(frozen=True, slots=True)
class RunList:
    """What one full read of the run list found, besides the runs it handed to `take`."""

    total_count: int
    pages: int
    distinct: int
    #: Runs per page as the API served them (it may cap `pageSize` below what was asked).
    page_size: int
    #: Every page listed runs newest first, and each page continued where the last one ended.
    newest_first: bool


def first_page_hint(first_page: int) -> str:
    other = 1 - first_page if first_page in (0, 1) else 1
    return f" (if the API numbers pages from {other}, set FIRST_PAGE={other})"


class _OrderCheck:
    """Whether the pages, read in order, list runs newest first. A run already on the page
    before is skipped at the seam: new runs at the head push the previous page's tail onto the
    next page, which is no disorder."""

    def __init__(self, created: Created) -> None:
        self._created = created
        self.holds = True
        self._last: float | None = None
        self._previous: set[RunKey] = set()

    def page(self, runs: list[Run]) -> None:
        if not self.holds or not runs:
            return
        times = [self._created(run) for run in runs]
        keys = [run_key(run) for run in runs]
        if any(newer < older for newer, older in pairwise(times)):
            self.holds = False
            return
        first_new = next(
            (t for k, t in zip(keys, times, strict=True) if k not in self._previous), None
        )
        if self._last is not None and first_new is not None and first_new > self._last:
            self.holds = False
        self._last, self._previous = times[-1], set(keys)


def read_run_list(
    get_page: GetPage,
    *,
    first_page: int,
    page_size: int,
    take: Take,
    created: Created,
    map_pages: MapPages = map,
) -> RunList:
    """Every page of the run list, checked for consistency; each distinct run goes to `take`
    once, in list order. Raises `CollectionError`."""
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
        return RunList(0, 1, 0, page_size, True)
    returned = len(first["runList"])
    # The server's real page size: it may cap pageSize below what we asked, or ignore it.
    step = returned if returned < first["totalCount"] else page_size
    planned = max(1, math.ceil(first["totalCount"] / step))
    seen = SeenRuns()
    order = _OrderCheck(created)
    first_keys = list(map(run_key, first["runList"]))

    def fold(number: int, page: RunPage) -> int:
        runs = page["runList"]
        totals.append(page["totalCount"])
        if number != first_page and len(runs) == step and list(map(run_key, runs)) == first_keys:
            raise InconsistentPagingError(
                f"the API ignores page: page {number} returned the same runs as page "
                f"{first_page}{hint}"
            )
        order.page(runs)
        for run in runs:
            if seen.add(run_key(run)):
                take(run)
        return len(runs)

    fold(first_page, first)
    rest = range(first_page + 1, first_page + planned)
    last = returned
    for number, page in zip(rest, map_pages(get_page, rest), strict=True):
        last = fold(number, page)
    # The list grew while we read it: follow it, but never forever.
    bound = 2 * planned + 2
    fetched = planned
    while fetched < math.ceil(max(totals) / step) and last >= step:
        if fetched >= bound:
            raise InconsistentPagingError(
                f"the API kept returning pages past totalCount ({first['totalCount']}) "
                f"after {fetched} pages"
            )
        last = fold(first_page + fetched, get_page(first_page + fetched))
        fetched += 1
    if len(seen) < max(totals):
        # Runs were added (or removed) at the head while we paged, shifting others past what
        # we read: read the head once more before calling the list inconsistent.
        again = get_page(first_page)
        totals.append(again["totalCount"])
        for run in again["runList"]:
            if seen.add(run_key(run)):
                take(run)
        if len(seen) < min(totals):
            raise InconsistentPagingError(
                f"read {len(seen)} distinct runs but totalCount is {totals[-1]}{hint}"
            )
    if len(seen) > max(totals):
        raise InconsistentPagingError(
            f"read {len(seen)} distinct runs but totalCount is at most {max(totals)}: "
            "the API returns runs past totalCount"
        )
    return RunList(totals[-1], fetched, len(seen), step, order.holds)


def read_head(
    get_page: GetPage,
    *,
    first_page: int,
    since: float,
    known: Callable[[RunKey], bool],
    take: Take,
    created: Created,
    max_pages: int,
) -> tuple[int, int]:
    """The runs at the head of a newest-first list created at or after `since` and not
    `known`, each handed to `take` once. Pages are read until one reaches an older run, comes
    back short, or `max_pages` were read. Returns the pages read and the first's totalCount."""
    seen = SeenRuns()
    step = total = 0
    for number in range(first_page, first_page + max_pages):
        page = get_page(number)
        runs = page["runList"]
        if number == first_page:
            total = page["totalCount"]
        step = max(step, len(runs))
        older = False
        for run in runs:
            if created(run) < since:
                older = True
                break
            key = run_key(run)
            if not known(key) and seen.add(key):
                take(run)
        if older or not runs or len(runs) < step:
            return number - first_page + 1, total
    return max_pages, total


def read_list(
    get_page: Callable[[int], tuple[list[T], int]],
    *,
    first_page: int,
    page_size: int,
    max_pages: int = 100,
) -> list[T]:
    """Every item of a plainly paged list (projects, a run's nodes), page after page, until
    `totalCount` items are read or a page comes back shorter than the API's page size. That size
    is the first page's when it is short of `totalCount`: a gateway may cap `pageSize` silently.
    More than `max_pages` pages is an API that pages forever."""
    items: list[T] = []
    step = page_size
    for page in range(first_page, first_page + max_pages):
        got, total = get_page(page)
        if page == first_page and 0 < len(got) < min(page_size, total):
            step = len(got)
        items += got
        if len(got) < step or len(items) >= total:
            return items
    raise InconsistentPagingError(f"still more items after {max_pages} pages of {step}")
