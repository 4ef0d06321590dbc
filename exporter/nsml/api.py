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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.adapters import BaseAdapter

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
from .models import (
    DecodeFailed,
    NodePage,
    ProjectPage,
    RunDetail,
    RunPage,
    decode_error,
    decode_nodes,
    decode_page,
    decode_projects,
    decode_run_detail,
)
from .session import api_session
from .signing import signed_headers

log = logging.getLogger(__name__)
USER_AGENT = f"nsml-exporter/{__version__}"

#: Called once per HTTP attempt with the outcome code ("200", "429", "timeout", ...) and seconds.
#: (endpoint, code, seconds) of each request: `runs`, `projects`, `run`, `nodes`.
RequestObserver = Callable[[str, str, float], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint(Generic[T]):
    """What one request reads: its `endpoint` label, how errors name it, its body's shape."""

    name: str
    what: str
    shape: str
    decode: Callable[[bytes], T]


RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
#: The largest body of a run detail or a page of projects or nodes: a page of 1,000 nodes is
#: about 250 KB. A node list that ignores pageSize must not cost a run-list page's memory.
DETAIL_MAX_BYTES = 1024 * 1024
CHUNK = 256 * 1024


def short_reason(error: BaseException, host: str = "") -> str:
    """`[Errno 111] Connection refused`, `cannot resolve HOST ([Errno -2] ...)`, `[SSL:
    WRONG_VERSION_NUMBER] ...`, `CERTIFICATE_VERIFY_FAILED ...`, or the error's type and text,
    cut at a word.

    requests' messages carry the pool's repr and the URL: the cause is what a reader needs.
    """
    text = str(error)
    resolving = re.search(r"\[Errno -\d+\] [^'\")]+", text)  # getaddrinfo's codes are negative
    if resolving:
        return f"cannot resolve {host or 'the host'} ({resolving.group(0).strip()})"
    for pattern in (
        r"\[Errno \d+\] [^'\")]+",
        r"CERTIFICATE_VERIFY_FAILED[^'\")]*",
        r"\[SSL: [A-Z0-9_]+\][^'\")]*",
    ):
        match = re.search(pattern, text)
        if match:
            return match.group(0).strip()
    if not text:
        return type(error).__name__
    whole = f"{type(error).__name__}: {text}"
    return whole if len(whole) <= 200 else whole[:200].rsplit(" ", 1)[0] + " ..."


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
        #: Items per page asked of every paged endpoint (lowered if the API refuses it).
        self.page_size = settings.page_size
        self._request_timeout = settings.request_timeout
        self._max_bytes = settings.max_response_bytes
        self._observe = observe or (lambda endpoint, code, seconds: None)
        parts = urlsplit(settings.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._host = parts.hostname or ""
        # Both the scrape's page fetches and the details' requests after it may be in flight.
        self._session = api_session(
            settings.base_url, adapter, pool=2 * settings.concurrency + 1, user_agent=USER_AGENT
        )

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
        uri = f"{self._base_path}/projects/runs?page={page}&pageSize={self.page_size}"
        what = Endpoint("runs", f"page {page}", "a run-list page", decode_page)
        return self._get(uri, what, deadline)

    def get_projects(self, page: int, deadline: float) -> ProjectPage:
        uri = f"{self._base_path}/projects?page={page}&pageSize={self.page_size}"
        what = Endpoint("projects", f"projects page {page}", "a project-list page", decode_projects)
        return self._get(uri, what, deadline)

    def get_run(self, project_id: str, run_name: str, deadline: float) -> RunDetail:
        """One run's detail. Its body is never logged: it may hold tokens."""
        uri = self._run_path(project_id, run_name)
        what = f"run {run_name} of project {project_id}"
        return self._get(uri, Endpoint("run", what, "a run detail", decode_run_detail), deadline)

    def get_nodes(self, project_id: str, run_name: str, page: int, deadline: float) -> NodePage:
        uri = f"{self._run_path(project_id, run_name)}/nodes?page={page}&pageSize={self.page_size}"
        what = f"nodes of run {run_name} of project {project_id}"
        return self._get(uri, Endpoint("nodes", what, "a node-list page", decode_nodes), deadline)

    def _run_path(self, project_id: str, run_name: str) -> str:
        project, run = quote(project_id, safe=""), quote(run_name, safe="")
        return f"{self._base_path}/projects/{project}/runs/{run}"

    def _get(self, uri: str, endpoint: Endpoint[T], deadline: float) -> T:
        """One signed GET of `uri`, asked once, before `deadline` (`time.monotonic()`)."""
        what = endpoint.what
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeoutError(f"{what}: collection deadline reached")
        timeout = min(self._request_timeout, remaining)
        # The URI is signed exactly as sent: requests leaves this plain query as it is.
        started = time.monotonic()
        code = "connection"
        try:
            with self._session.get(
                self._origin + uri, headers=self._headers(uri), timeout=timeout, stream=True
            ) as response:
                limit = self._max_bytes
                if endpoint.name != "runs":
                    limit = min(limit, DETAIL_MAX_BYTES)
                body = self._read_body(response, what, deadline, limit)
                code = str(response.status_code)
                return self._interpret(response, body, endpoint)
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
                    f"{what}: COLLECT_TIMEOUT reached while waiting for it"
                ) from None
            raise RequestTimeoutError(
                f"{what}: no answer within REQUEST_TIMEOUT ({timeout:g}s)", retryable=True
            ) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            # Refused, reset, DNS, TLS, a proxy that failed, a body cut short or undecodable.
            reason = short_reason(error, self._host)
            raise ConnectionFailedError(f"{what}: {reason}", retryable=True) from None
        finally:
            self._observe(endpoint.name, code, time.monotonic() - started)

    def _read_body(
        self, response: requests.Response, what: str, deadline: float, limit: int
    ) -> bytes:
        declared = response.headers.get("Content-Length", "")
        name = "MAX_RESPONSE_BYTES" if limit == self._max_bytes else "the details' limit"
        if declared.isdigit() and int(declared) > limit:
            raise InvalidResponseError(
                f"{what}: response of {declared} bytes is over {name} ({limit})"
            )
        chunks: list[bytes] = []
        size = 0
        # read1 returns what has arrived (decoded output bounded too), so a body trickling in
        # meets the deadline check; a plain read would block until the whole body had come.
        while chunk := response.raw.read1(CHUNK, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise InvalidResponseError(f"{what}: response is over {name} ({limit})")
            if time.monotonic() > deadline:
                raise RequestTimeoutError(f"{what}: body still arriving at the deadline")
            chunks.append(chunk)
        return b"".join(chunks)

    def _interpret(self, response: requests.Response, body: bytes, endpoint: Endpoint[T]) -> T:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return endpoint.decode(body)
            except DecodeFailed as error:
                raise InvalidResponseError(
                    f"{endpoint.what}: not {endpoint.shape}: {error}"
                ) from None
        what = f"{endpoint.what}: HTTP {status}{_api_error(body)}"
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
