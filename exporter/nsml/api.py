"""One signed GET of a run-list page over `requests`: a page, or a typed `CollectionError`.

One `requests.Session` serves every page, with an `HTTPAdapter` pool of `CONCURRENCY` + 1 kept-alive
connections. The environment conventions of Python HTTP clients (`HTTPS_PROXY`, `NO_PROXY`,
`REQUESTS_CA_BUNDLE`, `~/.netrc`; `SSL_CERT_FILE` too) are resolved once, for the API's URL, at
start: requests would otherwise read them again for every page. The body is streamed and read in
bounded pieces, so a body larger than `MAX_RESPONSE_BYTES` (a gzip bomb included) is refused
without being held, and a body that trickles in still meets the collection's deadline.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ProtocolError, ProxyError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from .. import __version__
from ..errors import (
    AuthError,
    ConnectionFailedError,
    HTTPStatusError,
    InvalidResponseError,
    RequestTimeoutError,
    ThrottledError,
)
from ..settings import Settings
from .models import DecodeFailed, RunPage, decode_error, decode_page
from .signing import signed_headers

log = logging.getLogger(__name__)

#: Called once per HTTP attempt with the outcome code ("200", "429", "timeout", ...) and seconds.
RequestObserver = Callable[[str, float], None]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 256 * 1024


def short_reason(error: BaseException) -> str:
    """`[Errno 111] Connection refused`, `CERTIFICATE_VERIFY_FAILED ...`, or the error's type.

    requests' messages carry the pool's repr and the URL: the cause is what a reader needs.
    """
    text = str(error)
    for pattern in (r"\[Errno -?\d+\] [^'\")]+", r"CERTIFICATE_VERIFY_FAILED[^'\")]*"):
        match = re.search(pattern, text)
        if match:
            return match.group(0).strip()
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


def retry_after(value: str | None) -> float | None:
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


def clock_skew(date: str | None) -> float | None:
    """Server clock minus ours, from the `Date` header, when it is there."""
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


class StaleConnectionRetry(Retry):
    """urllib3 retries for one case only: a kept-alive connection that the server closed just as
    it was reused (closed before any answer came; GET is safe to ask again). Every other failure
    goes to the exporter's own retries, which count it and pace them within the deadline."""

    def __init__(self, **kw: Any) -> None:
        kw.update(total=1, connect=0, read=1, status=0, redirect=0, other=0)
        kw.update(respect_retry_after_header=False, raise_on_status=False)
        super().__init__(**kw)

    def new(self, **kw: Any) -> Self:
        return type(self)()  # a retry is never retried again

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        # RemoteDisconnected, the usual sign of it, is a ConnectionResetError; through a proxy,
        # urllib3 wraps it in a ProxyError.
        cause: BaseException | None = error
        while isinstance(cause, ProtocolError | ProxyError) and cause.args:
            cause = cause.args[-1]
        if response is None and isinstance(cause, ConnectionResetError):
            return super().increment(method, url, response, error, _pool, _stacktrace)
        # requests' own default: raise at once.
        never = Retry(0, read=False).increment(method, url, response, error, _pool, _stacktrace)
        return cast(Self, never)


def _resolve_environment(session: requests.Session, url: str) -> None:
    """Proxies, CA bundle and netrc for `url`, read from the environment once."""
    resolved = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = resolved["proxies"]
    verify = resolved["verify"]
    if verify is True and os.environ.get("SSL_CERT_FILE"):
        verify = os.environ["SSL_CERT_FILE"]  # what Python's ssl module itself honours
    session.verify = verify
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False


class NsmlApi:
    """Signed requests to the NSML API. Thread-safe; one instance per exporter."""

    def __init__(
        self,
        settings: Settings,
        observe: RequestObserver | None = None,
        adapter: BaseAdapter | None = None,
    ) -> None:
        if settings.access_key is None or settings.secret_key is None:
            raise ValueError("NsmlApi needs access_key and secret_key")
        self._access_key = settings.access_key
        self._secret_key = settings.secret_key
        self._api_key = settings.api_key
        self._page_size = settings.page_size
        self._request_timeout = settings.request_timeout
        self._max_bytes = settings.max_response_bytes
        self._observe = observe or (lambda code, seconds: None)
        parts = urlsplit(settings.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Accept": "application/json",
                "Accept-Encoding": "gzip",
                "Content-Type": "application/json",  # as in NCP's documented request
                "User-Agent": f"nsml-exporter/{__version__}",
            }
        )
        pool = settings.concurrency + 1
        self._session.mount(
            self._origin + "/",
            adapter
            or HTTPAdapter(
                pool_connections=1, pool_maxsize=pool, max_retries=StaleConnectionRetry()
            ),
        )
        _resolve_environment(self._session, settings.base_url)

    def close(self) -> None:
        self._session.close()

    def _headers(self, uri: str) -> dict[str, str]:
        headers = signed_headers(
            self._secret_key.get_secret_value(),
            self._access_key.get_secret_value(),
            "GET",
            uri,
            int(time.time() * 1000),
        )
        if self._api_key is not None:
            headers["x-ncp-apigw-api-key"] = self._api_key.get_secret_value()
        return headers

    def get_page(self, page: int, deadline: float) -> RunPage:
        """Page `page` of the run list, asked once, before `deadline` (`time.monotonic()`)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeoutError(f"page {page}: collection deadline reached")
        timeout = min(self._request_timeout, remaining)
        # The URI is signed exactly as sent: requests leaves this plain query as it is.
        uri = f"{self._base_path}/projects/runs?page={page}&pageSize={self._page_size}"
        started = time.monotonic()
        code = "connection"
        try:
            with self._session.get(
                self._origin + uri, headers=self._headers(uri), timeout=timeout, stream=True
            ) as response:
                body = self._read_body(response, page, deadline)
                code = str(response.status_code)
                return self._interpret(response, body, page)
        except InvalidResponseError:
            code = "invalid"
            raise
        except RequestTimeoutError:
            code = "timeout"
            raise
        except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            code = "timeout"
            if timeout < self._request_timeout:  # cut short by the collection's deadline
                raise RequestTimeoutError(
                    f"page {page}: COLLECT_TIMEOUT reached while waiting for it"
                ) from None
            raise RequestTimeoutError(
                f"page {page}: no answer within REQUEST_TIMEOUT ({timeout:g}s)", retryable=True
            ) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            # Refused, reset, DNS, TLS, a proxy that failed, a body cut short or undecodable.
            raise ConnectionFailedError(
                f"page {page}: {short_reason(error)}", retryable=True
            ) from None
        finally:
            self._observe(code, time.monotonic() - started)

    def _read_body(self, response: requests.Response, page: int, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise InvalidResponseError(
                f"page {page}: response of {declared} bytes is over MAX_RESPONSE_BYTES "
                f"({self._max_bytes})"
            )
        chunks: list[bytes] = []
        size = 0
        # read1 returns what has arrived (decoded output bounded too), so a body trickling in
        # meets the deadline check; a plain read would block until the whole body had come.
        while chunk := response.raw.read1(CHUNK, decode_content=True):
            size += len(chunk)
            if size > self._max_bytes:
                raise InvalidResponseError(
                    f"page {page}: response is over MAX_RESPONSE_BYTES ({self._max_bytes})"
                )
            if time.monotonic() > deadline:
                raise RequestTimeoutError(f"page {page}: body still arriving at the deadline")
            chunks.append(chunk)
        return b"".join(chunks)

    def _interpret(self, response: requests.Response, body: bytes, page: int) -> RunPage:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return decode_page(body)
            except DecodeFailed as error:
                raise InvalidResponseError(f"page {page}: not a run-list page: {error}") from None
        what = f"page {page}: HTTP {status}{_api_error(body)}"
        after = retry_after(response.headers.get("Retry-After"))
        if status in (401, 403):
            skew = clock_skew(response.headers.get("Date"))
            if skew is not None and abs(skew) > 60:
                what += (
                    f"; the local clock is {-skew:+.0f}s off the API's: signatures are "
                    "accepted only within 5 minutes, check NTP"
                )
            raise AuthError(what)
        if status == 429:
            raise ThrottledError(what, retryable=True, retry_after=after)
        raise HTTPStatusError(
            what, retryable=status in RETRYABLE_STATUS, retry_after=after, status=status
        )


def _api_error(body: bytes) -> str:
    """` Message (errorCode N): details` from the API's error body, or nothing."""
    try:
        detail = decode_error(body)
    except DecodeFailed:
        return ""
    text = f" {detail.get('message', '')} (errorCode {detail['errorCode']})"
    if detail.get("details"):
        text += f": {detail['details']}"
    return text[:300]
