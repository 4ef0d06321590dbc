"""Signed, paginated access to the NSML run list.

Keep-alive connections come from `transport.HTTPTransport` (the standard library's http.client:
`requests`, then urllib3, cost several times its CPU per page). The first page gives
`totalCount`; the remaining pages are fetched `CONCURRENCY` at a time. Runs are deduplicated by
(`projectId`, `runName`), and the pages are checked against each other and against `totalCount`
so that an API that ignores `page`, pages forever, or lies about its size fails loudly
(`inconsistent`) instead of silently serving wrong numbers. Every request is bounded by
`REQUEST_TIMEOUT` and the collection deadline; retries back off with jitter, honour
`Retry-After`, and never sleep past the deadline.
"""

from __future__ import annotations

import http.client
import logging
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from operator import attrgetter
from urllib.parse import urlsplit

from . import __version__
from .errors import (
    AuthError,
    CollectionError,
    ConnectionFailedError,
    HTTPStatusError,
    InconsistentPagingError,
    InvalidResponseError,
    RequestTimeoutError,
    ThrottledError,
)
from .models import DecodeFailed, RunPage, RunRecord, decode_error, decode_page
from .settings import Settings
from .signing import signed_headers
from .transport import HTTPTransport, Response, Transport

log = logging.getLogger(__name__)

RunKey = tuple[str, str]
#: A run's identity, (projectId, runName).
_key: Callable[[RunRecord], RunKey] = attrgetter("project_id", "run_name")
#: Called once per HTTP attempt with the outcome code ("200", "429", "timeout", ...) and seconds.
RequestObserver = Callable[[str, float], None]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 0.2
BACKOFF_CAP = 2.0
CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Page:
    """One page, reduced to records as soon as it arrives (its JSON and dicts are dropped)."""

    total_count: int
    runs: list[RunRecord]

    @property
    def keys(self) -> list[RunKey]:
        return list(map(_key, self.runs))


@dataclass(frozen=True, slots=True)
class RunList:
    """The whole run list as read by one collection."""

    runs: dict[RunKey, RunRecord]
    total_count: int
    pages: int


def _no_observer(code: str, seconds: float) -> None:
    return None


def _short_reason(error: BaseException) -> str:
    """`[Errno 111] Connection refused`, `IncompleteRead`, `CERTIFICATE_VERIFY_FAILED ...`."""
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if match:
        return match.group(0).strip()
    if isinstance(error, http.client.HTTPException | zlib.error) or not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text}"[:200]


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _clock_skew(date: str | None) -> float | None:
    """Server clock minus ours, from the `Date` header, when it is there."""
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


class NsmlClient:
    """Reads the whole run list. Thread-safe; one instance per exporter."""

    def __init__(
        self,
        settings: Settings,
        observe: RequestObserver = _no_observer,
        transport: Transport | None = None,
    ) -> None:
        if settings.access_key is None or settings.secret_key is None:
            raise ValueError("NsmlClient needs access_key and secret_key")
        self._access_key = settings.access_key
        self._secret_key = settings.secret_key
        self._api_key = settings.api_key
        self._page_size = settings.page_size
        self._first_page = settings.first_page
        self._request_timeout = settings.request_timeout
        self._retries = settings.retries
        self._max_bytes = settings.max_response_bytes
        self._observe = observe
        self._base_path = urlsplit(settings.base_url).path.rstrip("/")
        self._http = transport or HTTPTransport(settings.base_url, settings.concurrency + 1)
        self._concurrency = settings.concurrency
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="nsml-page")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- one request -------------------------------------------------------------------------

    def _headers(self, uri: str) -> dict[str, str]:
        headers = signed_headers(
            self._secret_key.get_secret_value(),
            self._access_key.get_secret_value(),
            "GET",
            uri,
            int(time.time() * 1000),
        )
        headers["Accept"] = "application/json"
        headers["Content-Type"] = "application/json"  # as in NCP's documented request
        headers["Accept-Encoding"] = "gzip"
        headers["User-Agent"] = f"nsml-exporter/{__version__}"
        if self._api_key is not None:
            headers["x-ncp-apigw-api-key"] = self._api_key.get_secret_value()
        return headers

    def _read_body(self, response: Response, page: int, deadline: float) -> bytes:
        declared = response.header("Content-Length") or ""
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise InvalidResponseError(
                f"page {page}: response of {declared} bytes is over MAX_RESPONSE_BYTES "
                f"({self._max_bytes})"
            )
        chunks: list[bytes] = []
        size = 0
        # read1 returns whatever has arrived, so a body trickling in byte by byte still meets
        # the deadline check (a plain read would block until the whole body had come).
        while chunk := response.read1(CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise InvalidResponseError(
                    f"page {page}: response is over MAX_RESPONSE_BYTES ({self._max_bytes})"
                )
            if time.monotonic() > deadline:
                raise RequestTimeoutError(f"page {page}: body still arriving at the deadline")
            chunks.append(chunk)
        return b"".join(chunks)

    def _request_page(self, page: int, deadline: float) -> RunPage:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeoutError(f"page {page}: collection deadline reached")
        timeout = min(self._request_timeout, remaining)
        uri = f"{self._base_path}/projects/runs?page={page}&pageSize={self._page_size}"
        started = time.monotonic()
        code = "connection"
        response: Response | None = None
        try:
            response = self._http.get(uri, self._headers(uri), timeout)
            body = self._read_body(response, page, deadline)
            code = str(response.status)
            return self._interpret(response, body, page)
        except InvalidResponseError:
            code = "invalid"
            raise
        except RequestTimeoutError:
            code = "timeout"
            raise
        except TimeoutError:
            code = "timeout"
            if timeout < self._request_timeout:  # cut short by the collection's deadline
                raise RequestTimeoutError(
                    f"page {page}: COLLECT_TIMEOUT reached while waiting for it"
                ) from None
            raise RequestTimeoutError(
                f"page {page}: no answer within REQUEST_TIMEOUT ({timeout:g}s)", retryable=True
            ) from None
        except (
            http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine, ...
            ConnectionResetError,
            ConnectionAbortedError,
            BrokenPipeError,
            zlib.error,
        ) as error:
            raise ConnectionFailedError(
                f"page {page}: connection broke ({_short_reason(error)})", retryable=True
            ) from None
        except OSError as error:  # refused, DNS, TLS, unreachable
            raise ConnectionFailedError(
                f"page {page}: {_short_reason(error)}", retryable=True
            ) from None
        finally:
            if response is not None:
                # Read to the end, error status or not: reuse it. Never reuse a half-read one.
                response.finish(reuse=code not in ("invalid", "timeout", "connection"))
            self._observe(code, time.monotonic() - started)

    def _interpret(self, response: Response, body: bytes, page: int) -> RunPage:
        status = response.status
        if 200 <= status < 300:
            try:
                return decode_page(body)
            except DecodeFailed as error:
                raise InvalidResponseError(f"page {page}: not a run-list page: {error}") from None
        what = f"page {page}: HTTP {status}{self._api_error(body)}"
        retry_after = _retry_after(response.header("Retry-After"))
        if status in (401, 403):
            skew = _clock_skew(response.header("Date"))
            if skew is not None and abs(skew) > 60:
                what += (
                    f"; the local clock is {-skew:+.0f}s off the API's: signatures are "
                    "accepted only within 5 minutes, check NTP"
                )
            raise AuthError(what)
        if status == 429:
            raise ThrottledError(what, retryable=True, retry_after=retry_after)
        raise HTTPStatusError(what, retryable=status in RETRYABLE_STATUS, retry_after=retry_after)

    @staticmethod
    def _api_error(body: bytes) -> str:
        try:
            detail = decode_error(body)
        except DecodeFailed:
            return ""
        text = f" {detail.message} (errorCode {detail.error_code})"
        if detail.details:
            text += f": {detail.details}"
        return text[:300]

    def get_page(self, page: int, deadline: float) -> Page:
        """One page, retried on 429/5xx/timeouts/connection errors within the deadline."""
        attempt = 0
        while True:
            try:
                validated = self._request_page(page, deadline)
                return Page(validated.total_count, validated.run_list)
            except CollectionError as error:
                if not error.retryable or attempt >= self._retries:
                    raise
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0)
                if error.retry_after is not None:
                    delay = max(delay, error.retry_after)
                if time.monotonic() + delay >= deadline:
                    raise type(error)(
                        f"{error}; a retry in {delay:.1f}s would pass COLLECT_TIMEOUT"
                    ) from None
                attempt += 1
                log.debug(
                    "retrying page %d in %.2fs (%d/%d): %s",
                    page,
                    delay,
                    attempt,
                    self._retries,
                    error,
                )
                time.sleep(delay)

    # -- the whole list ----------------------------------------------------------------------

    def _fetch_many(self, pages: range, deadline: float) -> dict[int, Page]:
        """`pages`, `CONCURRENCY` at a time: each worker takes the next page number until none is
        left or one has failed (one task per worker, not per page: a future per page cost more
        CPU than the page's request). Returns as soon as a page fails."""
        if not pages:
            return {}
        numbers = iter(pages)  # shared: next() on a range iterator is atomic
        results: dict[int, Page] = {}
        failures: list[tuple[int, BaseException]] = []
        stop = threading.Event()
        workers = min(self._concurrency, len(pages))
        running = [workers]
        lock = threading.Lock()

        def work() -> None:
            try:
                for number in numbers:
                    if stop.is_set():
                        return
                    try:
                        results[number] = self.get_page(number, deadline)
                    except BaseException as error:
                        # Without traceback or context (whose own traceback holds these frames):
                        # the frames tie the error to `results`, and `failures` ties `results` to
                        # the error, a cycle keeping every page read so far alive until a rare
                        # full GC (seen: +38 MB per timed-out scrape at 100,000 runs).
                        error.__traceback__ = error.__context__ = error.__cause__ = None
                        failures.append((number, error))
                        stop.set()
                        return
            finally:
                with lock:
                    running[0] -= 1
                    if not running[0]:
                        stop.set()

        for _ in range(workers):
            self._pool.submit(work)
        stop.wait(max(0.0, deadline - time.monotonic()) + 0.5)
        stop.set()  # a worker still waiting on a page takes no other
        if failures:
            error = min(failures, key=lambda failure: failure[0])[1]
            failures.clear()  # this frame must not hold the error it raises: a reference cycle
            try:
                raise error
            finally:
                del error
        if len(results) < len(pages):
            raise RequestTimeoutError(
                f"{len(pages) - len(results)} page(s) still outstanding at COLLECT_TIMEOUT"
            )
        return results

    def fetch_runs(self, deadline: float) -> RunList:
        """Read every page of the run list before `deadline` (a `time.monotonic()` value)."""
        first_number = self._first_page
        first = self.get_page(first_number, deadline)
        totals = [first.total_count]
        if not first.runs:
            if first.total_count:
                raise InconsistentPagingError(
                    f"page {first_number} is empty but totalCount is {first.total_count}"
                    f"{self._first_page_hint()}"
                )
            return RunList({}, 0, 1)
        returned = len(first.runs)
        # The server's real page size: it may cap pageSize below what we asked, or ignore it.
        step = returned if returned < first.total_count else self._page_size
        planned = max(1, math.ceil(first.total_count / step))
        pages = {first_number: first}
        pages.update(self._fetch_many(range(first_number + 1, first_number + planned), deadline))
        totals.extend(page.total_count for page in pages.values())
        # The list grew while we read it: follow it, but never forever.
        bound = 2 * planned + 2
        fetched = planned
        while (
            fetched < math.ceil(max(totals) / step)
            and len(pages[first_number + fetched - 1].runs) >= step
        ):
            if fetched >= bound:
                raise InconsistentPagingError(
                    f"the API kept returning pages past totalCount ({first.total_count}) "
                    f"after {fetched} pages"
                )
            page = self.get_page(first_number + fetched, deadline)
            pages[first_number + fetched] = page
            totals.append(page.total_count)
            fetched += 1

        page_count = len(pages)
        runs: dict[RunKey, RunRecord] = {}
        first_keys = first.keys
        for number in sorted(pages):
            page = pages[number]
            if (
                number != first_number
                and len(page.runs) == step
                and _key(page.runs[0]) == first_keys[0]
                and page.keys == first_keys
            ):
                raise InconsistentPagingError(
                    f"the API ignores page: page {number} returned the same runs as page "
                    f"{first_number}{self._first_page_hint()}"
                )
            runs.update(zip(map(_key, page.runs), page.runs, strict=True))
        if len(runs) < max(totals):
            # Runs were added (or removed) at the head while we paged, shifting others past what
            # we read: read the head once more before calling the list inconsistent.
            again = self.get_page(first_number, deadline)
            totals.append(again.total_count)
            runs.update(zip(map(_key, again.runs), again.runs, strict=True))
            if len(runs) < min(totals):
                raise InconsistentPagingError(
                    f"read {len(runs)} distinct runs but totalCount is {totals[-1]}"
                    f"{self._first_page_hint()}"
                )
        if len(runs) > max(totals):
            raise InconsistentPagingError(
                f"read {len(runs)} distinct runs but totalCount is at most {max(totals)}: "
                "the API returns runs past totalCount"
            )
        return RunList(runs, totals[-1], page_count)

    def _first_page_hint(self) -> str:
        other = 1 - self._first_page if self._first_page in (0, 1) else 1
        return f" (if the API numbers pages from {other}, set FIRST_PAGE={other})"
