"""The run list as one collection reads it: signed pages, retried, paged, fetched concurrently.

`NsmlClient` only wires the parts: `NsmlApi.get_page` (one signed request), `with_retries`
(within the collection's deadline), `read_run_list` (paging and its consistency rules), and a
`ThreadPoolExecutor` of `CONCURRENCY` threads for the pages after the first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

from requests.adapters import BaseAdapter

from ..settings import Settings
from .api import NsmlApi, RequestObserver
from .models import RunPage
from .paging import RunList, read_run_list
from .retry import with_retries


class NsmlClient:
    """Reads the whole run list. Thread-safe; one instance per exporter."""

    def __init__(
        self,
        settings: Settings,
        observe: RequestObserver | None = None,
        adapter: BaseAdapter | None = None,
    ) -> None:
        self.api = NsmlApi(settings, observe, adapter)
        self._retries = settings.retries
        self._first_page = settings.first_page
        self._page_size = settings.page_size
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="nsml-page")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    def get_page(self, page: int, deadline: float) -> RunPage:
        """One page, retried on 429/5xx/timeouts/connection errors within the deadline."""
        return with_retries(
            partial(self.api.get_page, page, deadline),
            retries=self._retries,
            deadline=deadline,
            what=f"page {page}",
        )

    def fetch_runs(self, deadline: float) -> RunList:
        """Read every page of the run list before `deadline` (a `time.monotonic()` value)."""
        return read_run_list(
            partial(self.get_page, deadline=deadline),
            first_page=self._first_page,
            page_size=self._page_size,
            map_pages=self._pool.map,
        )
