"""Paging through the run list, and the rules that keep an inconsistent API from lying to us.

`read_run_list` is a plain function of "get page N": it knows nothing of HTTP. The first page
gives `totalCount`; the others are read with `map_pages` (the builtin `map`, or an ordered map
over a thread pool), in page order, and each page's runs are handed to `take` as it arrives:
nothing holds the whole list. The caller settles runs by identity (`collection.store`), so a
list that shifts under the reader (runs created, finished or deleted between two pages) is no
error.

What `totalCount` can prove is checked, so that an API that ignores `page`, pages forever, or
ends its list early fails loudly (`inconsistent`) instead of serving wrong numbers. What the
docs leave open (pages from 0 or 1, a server-side cap on `pageSize`, the list's order) is
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
Take = Callable[[list[Run]], None]  # a page's runs, in list order
Created = Callable[[Run], float]


@dataclass(frozen=True, slots=True)
class RunList:
    """What one full read of the run list found, besides the runs it handed to `take`."""

    #: The last page's `totalCount`.
    total_count: int
    #: Pages read by this call (a resumed read counts from where it resumed).
    pages: int
    #: Runs per page as the API served them (it may cap `pageSize` below what was asked).
    page_size: int
    #: Every page listed runs newest first, and each page continued where the last one ended.
    newest_first: bool
    #: Most runs a page listed past its own `totalCount` (0 for an API that tells the truth).
    past_total: int = 0
    #: How far the pages' totalCounts spread: runs created (or deleted) while the list was
    #: read, which may have shifted runs across pages read at the same time.
    moved: int = 0


@dataclass(slots=True)
class Progress:
    """Where a full read has got: pages read in order from the first, and the page size. A read
    that fails resumes from here (`read_run_list(resume=...)`)."""

    pages: int = 0
    page_size: int = 0
    total_count: int = 0
    planned: int = 0


def first_page_hint(first_page: int) -> str:
    """The hint for the other numbering (`FIRST_PAGE` is 0 or 1)."""
    other = 1 - first_page
    return f" (if the API numbers pages from {other}, set FIRST_PAGE={other})"


class _OrderCheck:
    """Whether the pages, read in order, list runs newest first. A run already on the page
    before is skipped at the seam: new runs at the head push the previous page's tail onto the
    next page, which is no disorder. Where the totalCount changed between two pages, the list
    changed between them and their seam proves nothing: only the order within pages counts."""

    def __init__(self, created: Created) -> None:
        self._created = created
        self.holds = True
        self._last: float | None = None
        self._previous: set[RunKey] = set()
        self._total: int | None = None

    def page(self, runs: list[Run], total: int) -> None:
        if not self.holds or not runs:
            return
        if total != self._total:
            self._last, self._total = None, total
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
    progress: Progress | None = None,
) -> RunList:
    """Every page of the run list from where `progress` says (the first page for a new read),
    each page's runs handed to `take` in list order; `progress` follows the pages read, so that a
    read that fails can resume. Raises `CollectionError`.

    A list that changes while it is paged is no error: a run pushed onto the next page is handed
    over twice (the caller settles runs by identity), one pulled back onto a page already read
    is missed (the next read has it). Only what `totalCount` proves fails the read: a page that
    ends the list before its own `totalCount` says, an API that ignores `page`, pages that never
    end. Runs listed past `totalCount` are taken and counted in `past_total`.
    """
    progress = progress if progress is not None else Progress()
    hint = first_page_hint(first_page)
    start = progress.pages
    try:
        first = get_page(first_page + start)
    except HTTPStatusError as error:
        if error.status != 400 or first_page != 0 or start:
            raise
        # A 1-based API refuses page 0 outright.
        raise HTTPStatusError(f"{error}{hint}", status=400) from None
    if start == 0:
        returned = len(first["runList"])
        if not returned:
            if first["totalCount"]:
                raise InconsistentPagingError(
                    f"page {first_page} is empty but totalCount is {first['totalCount']}{hint}"
                )
            progress.pages, progress.page_size, progress.total_count = 1, page_size, 0
            return RunList(0, 1, page_size, True)
        # The server's real page size: it may cap pageSize below what we asked, or ignore it.
        progress.page_size = returned if returned < first["totalCount"] else page_size
    step = progress.page_size
    planned = max(start + 1, math.ceil(first["totalCount"] / step))
    progress.planned = planned
    order = _OrderCheck(created)
    first_keys = list(map(run_key, first["runList"]))
    past = 0
    totals = [first["totalCount"]]

    def fold(index: int, page: RunPage) -> int:
        nonlocal past
        runs, total = page["runList"], page["totalCount"]
        totals.append(total)
        number = first_page + index
        if (
            index != start
            and len(runs) == step
            and total == first["totalCount"]  # a list that grew can repeat a page, shifted
            and run_key(runs[0]) == first_keys[0]
            and list(map(run_key, runs)) == first_keys
        ):
            raise InconsistentPagingError(
                f"the API ignores page: page {number} returned the same runs as page "
                f"{first_page + start}{hint}"
            )
        missing = min(step, total - index * step) - len(runs)
        if missing > 0:  # fewer runs than its own totalCount puts at its place
            short = total - index * step - len(runs)
            raise InconsistentPagingError(
                f"page {number} lists {len(runs)} runs and ends the list, but its totalCount "
                f"({total}) says {short} more follow{hint if short == step else ''}"
            )
        past = max(past, index * step + len(runs) - total)
        order.page(runs, total)
        take(runs)
        progress.pages, progress.total_count = index + 1, total
        return len(runs)

    last = fold(start, first)
    # A list that ends on a full page is proved to end by the page after it: that page is
    # asked for with the others, not after them (one round trip less on every read).
    ahead = 1 if first["totalCount"] % step == 0 else 0
    rest = range(start + 1, planned + ahead)
    for index, page in zip(rest, map_pages(get_page, [first_page + i for i in rest]), strict=True):
        last = fold(index, page)
    # A full last page: the list grew while we read it, or totalCount understates it. Follow
    # it to its end, but never forever.
    index = max(planned + ahead, start + 1)
    while last >= step:
        if index >= 2 * planned + 2:
            raise InconsistentPagingError(
                f"the API kept returning pages past totalCount ({first['totalCount']}) "
                f"after {index} pages"
            )
        last = fold(index, get_page(first_page + index))
        index += 1
    moved = max(totals) - min(totals)
    return RunList(progress.total_count, index - start, step, order.holds, past, moved)


def read_head(
    get_page: GetPage,
    *,
    first_page: int,
    known: Callable[[RunKey], bool],
    take: Take,
    max_pages: int,
    min_pages: int = 1,
) -> tuple[int, int]:
    """The head of a newest-first list, down to the first page that ends with a run already
    `known` (and at least `min_pages`): every run on those pages goes to `take` (new runs, and
    the newest known ones with their current status). Known is by identity, not by time, so a
    run dated in the future at the head hides nothing below it. Stops at a short page, or after
    `max_pages`. Returns the pages read and the first's totalCount."""
    total = step = 0
    for read in range(1, max_pages + 1):
        page = get_page(first_page + read - 1)
        runs = page["runList"]
        if read == 1:
            total = page["totalCount"]
        step = max(step, len(runs))
        reached = bool(runs) and known(run_key(runs[-1])) and read >= min_pages
        take(runs)
        if reached or len(runs) < step or not runs or read * step >= total:
            return read, total
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
