"""The run list as the exporter reads it: signed pages, retried, paced, paged, fetched concurrently.

`NsmlClient` only wires the parts: `NsmlApi.get_page` (one signed request), `with_retries`
(within a deadline), `read_run_list` and `read_head` (paging and its consistency rules), a
`ThreadPoolExecutor` of `CONCURRENCY` threads for the pages after the first, read in order with at
most `CONCURRENCY` pages ahead, and a `Pace` that a background read waits on before each page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from requests.adapters import BaseAdapter

from ..errors import HTTPStatusError
from ..settings import Settings
from .api import NsmlApi, RequestObserver
from .models import RunPage
from .paging import (
    Created,
    GetPage,
    Progress,
    RunKey,
    RunList,
    Take,
    read_head,
    read_run_list,
)
from .retry import with_retries

log = logging.getLogger(__name__)

#: The page size asked after an API refused a larger one with 400: the documented examples' own.
FALLBACK_PAGE_SIZE = 100


class Pace:
    """A token bucket: at most `rate` requests a second, in bursts of at most `burst`. `wait`
    blocks until a request may go; `charge` takes a token without waiting (a scrape's head read
    goes at once, and the background read after it waits the longer)."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def _take(self) -> float:
        """Take a token; the seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            self._tokens -= 1
            return max(0.0, -self._tokens / self._rate)

    def wait(self, stop: threading.Event | None = None) -> None:
        delay = self._take()
        if delay > 0:
            (stop or threading.Event()).wait(delay)

    def charge(self, requests: int = 1) -> None:
        for _ in range(requests):
            self._take()


class NsmlClient:
    """Reads the run list, whole or its head. Thread-safe; one instance per exporter."""

    def __init__(
        self,
        settings: Settings,
        observe: RequestObserver | None = None,
        adapter: BaseAdapter | None = None,
    ) -> None:
        self.api = NsmlApi(settings, observe, adapter)
        self._retries = settings.retries
        self._first_page = settings.first_page
        self._collect_timeout = settings.collect_timeout
        self._window = settings.concurrency
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="nsml-page")
        #: Seconds of the last run-list requests that answered (retries' waits not included).
        self._answered: deque[float] = deque(maxlen=16)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    @property
    def latency(self) -> float:
        """Mean seconds of the last run-list requests that answered: a request's own time, not
        the waits of its retries (a throttled API is no slow one)."""
        answered = list(self._answered)
        return sum(answered) / len(answered) if answered else 0.0

    def get_page(self, page: int, deadline: float | None = None) -> RunPage:
        """One page, retried on 429/5xx/timeouts/connection errors within the deadline (None:
        `COLLECT_TIMEOUT` from now, for this page alone)."""
        if deadline is None:
            deadline = time.monotonic() + self._collect_timeout
        return with_retries(
            partial(self._timed, page, deadline),
            retries=self._retries,
            deadline=deadline,
            what=f"page {page}",
        )

    def _timed(self, page: int, deadline: float) -> RunPage:
        started = time.monotonic()
        got = self.api.get_page(page, deadline)
        self._answered.append(time.monotonic() - started)
        return got

    def read_runs(
        self,
        take: Take,
        created: Created,
        *,
        deadline: Callable[[], float | None],
        pace: Callable[[], None] = lambda: None,
        progress: Progress | None = None,
    ) -> RunList:
        """Read the run list from where `progress` says to its end, each page's runs handed to
        `take`. `deadline()` (a `time.monotonic()` value, asked as each page starts) bounds the
        read; None gives each page its own."""
        progress = progress if progress is not None else Progress()
        asked: list[int] = []

        def get(page: int) -> RunPage:
            pace()
            asked.append(page)
            return self.get_page(page, deadline())

        try:
            result = self._read(get, take, created, progress)
        except HTTPStatusError as error:
            if (
                error.status != 400
                or self.api.page_size <= FALLBACK_PAGE_SIZE
                or asked[1:]
                or progress.pages
            ):
                raise
            refused, self.api.page_size = self.api.page_size, FALLBACK_PAGE_SIZE
            try:
                result = self._read(get, take, created, progress)
            except HTTPStatusError as again:
                # Refused at the smaller size too: the page size was not the problem.
                self.api.page_size = refused
                raise again from None
            log.warning(
                "the API refused pageSize=%d (%s); asking for %d from now on",
                refused,
                error,
                FALLBACK_PAGE_SIZE,
            )
        return result

    def _read(self, get: GetPage, take: Take, created: Created, progress: Progress) -> RunList:
        return read_run_list(
            get,
            first_page=self._first_page,
            page_size=self.api.page_size,
            take=take,
            created=created,
            map_pages=self._ordered,
            progress=progress,
        )

    def read_head(
        self,
        known: Callable[[RunKey], bool],
        take: Take,
        *,
        deadline: float,
        max_pages: int,
        min_pages: int = 1,
        pace: Callable[[], None] = lambda: None,
    ) -> tuple[int, int]:
        """The head of a newest-first list down to a page ending with a `known` run, and at
        least `min_pages`: (pages read, totalCount)."""

        def get(page: int) -> RunPage:
            pace()
            return self.get_page(page, deadline)

        return read_head(
            get,
            first_page=self._first_page,
            known=known,
            take=take,
            max_pages=max_pages,
            min_pages=min_pages,
        )

    def run_exists(self, project_id: str, run_name: str, deadline: float) -> bool:
        """Whether the run's detail answers (False for 404), retried like a page."""
        try:
            with_retries(
                partial(self.api.get_run, project_id, run_name, deadline),
                retries=self._retries,
                deadline=deadline,
                what=f"run {run_name} of project {project_id}",
            )
        except HTTPStatusError as error:
            if error.status == 404:
                return False
            raise
        return True

    def _ordered(self, get: GetPage, pages: Iterable[int]) -> Iterator[RunPage]:
        """`map(get, pages)` on the pool, in order, with at most `CONCURRENCY` pages ahead of
        the one being handed out (so a long list is never all in memory)."""
        ahead: deque[Future[RunPage]] = deque()
        numbers = iter(pages)
        try:
            for number in numbers:
                ahead.append(self._pool.submit(get, number))
                if len(ahead) >= self._window:
                    break
            while ahead:
                page = ahead.popleft().result()
                for number in numbers:
                    ahead.append(self._pool.submit(get, number))
                    break
                yield page
        finally:
            for future in ahead:
                future.cancel()
