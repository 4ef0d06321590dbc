"""The requests session to the NSML API: headers, a keep-alive pool, one narrow urllib3 retry,
and the environment (proxies, CA bundle, netrc) resolved once."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ProtocolError, ProxyError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry


class StaleConnectionRetry(Retry):
    """urllib3 retries for one case only: a kept-alive connection that the server closed just as
    it was reused (closed before any answer came; GET is safe to ask again). Every other failure
    goes to the exporter's own retries, which count it and pace them within the deadline.

    `total` is how many such retries one request may make (the reset counts as a read error
    directly, as an "other" one through a proxy; neither is limited apart): `api_session` allows
    one per pooled connection and one more, as a server's keep-alive timeout may close every
    idle connection at once. What `new()` passes after each retry (one fewer) is kept, so the
    allowance runs out: an API behind a balancer that resets every connection is asked that
    many times, not for ever."""

    def __init__(self, **kw: Any) -> None:
        defaults = {
            "total": 1,
            "connect": 0,
            "read": None,
            "status": 0,
            "redirect": 0,
            "other": None,
            "respect_retry_after_header": False,
            "raise_on_status": False,
        }
        super().__init__(**{**defaults, **kw})

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


def api_session(
    base_url: str, adapter: BaseAdapter | None, *, pool: int, user_agent: str
) -> requests.Session:
    """A session for `base_url`: JSON asked gzipped, `pool` kept-alive connections."""
    session = requests.Session()
    session.headers.update(
        {
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "Content-Type": "application/json",  # as in NCP's documented request
            "User-Agent": user_agent,
        }
    )
    parts = urlsplit(base_url)
    session.mount(
        f"{parts.scheme}://{parts.netloc}/",
        adapter
        or HTTPAdapter(
            pool_connections=1,
            pool_maxsize=pool,
            max_retries=StaleConnectionRetry(total=pool + 1),
        ),
    )
    _resolve_environment(session, base_url)
    return session
