"""The signed GET over requests, on real sockets: gzip, chunked bodies, keep-alive, connections
the server drops, TLS with a private CA, and proxies from the environment (a plain forward proxy
and a CONNECT tunnel, both with credentials)."""

from __future__ import annotations

import base64
import io
import json
import re
import select
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from exporter.errors import (
    AuthError,
    CollectionError,
    ConnectionFailedError,
    HTTPStatusError,
    InvalidResponseError,
    RequestTimeoutError,
    ThrottledError,
)
from exporter.nsml.client import NsmlClient
from tests.fake_api import FaultyServer, FaultySimulator
from tests.helpers.http import FakeAdapter
from tests.helpers.process import ExporterProcess, exporter_args_for, exporter_env
from tests.helpers.runs import ReadRuns, api_run, fetch_runs, static_runs
from tests.helpers.settings import ACCESS, SECRET, make_settings

RUNS = 700
PAGE = 40  # 18 pages


def expected_keys() -> set[tuple[str, str]]:
    return {(run.project_id, run.run_name) for run in static_runs(RUNS)}


def fetch(base_url: str, **settings: object) -> ReadRuns:
    values: dict[str, object] = {"base_url": base_url, "page_size": PAGE, "retries": 0}
    client = NsmlClient(make_settings(**{**values, **settings}))
    try:
        return fetch_runs(client, deadline=time.monotonic() + 20)
    finally:
        client.close()


@pytest.fixture
def populated(simulator: FaultyServer) -> FaultyServer:
    simulator.sim.set_runs(static_runs(RUNS))
    return simulator


@pytest.mark.parametrize(
    ("gzip", "chunked"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_every_body_encoding_reads_every_run(
    populated: FaultyServer, gzip: bool, chunked: bool
) -> None:
    populated.sim.gzip, populated.sim.chunked = gzip, chunked
    result = fetch(populated.base_url)
    assert set(result.runs) == expected_keys()
    assert populated.sim.requests["gzip"] == (18 if gzip else 0)


def test_connections_are_kept_alive_across_pages_and_scrapes(populated: FaultyServer) -> None:
    client = NsmlClient(make_settings(base_url=populated.base_url, page_size=PAGE, concurrency=4))
    try:
        for _ in range(3):
            assert len(fetch_runs(client, deadline=time.monotonic() + 20).runs) == RUNS
    finally:
        client.close()
    assert populated.sim.requests["runs"] == 3 * 18
    assert populated.sim.requests["connections"] <= 5  # CONCURRENCY + the scrape's own


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(
    populated: FaultyServer,
) -> None:
    populated.sim.close_after = 1  # every connection closed, unannounced, after one answer
    client = NsmlClient(make_settings(base_url=populated.base_url))
    for _ in range(3):
        client.get_page(1, time.monotonic() + 5)
        time.sleep(0.2)  # the FIN arrives while the connection sits in the pool
    assert populated.sim.requests["connections"] == 3
    assert populated.sim.requests["runs"] == 3  # no failed attempt, no retry


def test_a_server_that_closes_connections_often_still_gives_every_run(
    populated: FaultyServer,
) -> None:
    populated.sim.close_after = 2
    result = fetch(populated.base_url)  # no retries: any failed page would fail the read
    assert set(result.runs) == expected_keys()
    assert populated.sim.requests["runs"] == 18
    assert populated.sim.requests["connections"] >= 9


# -- TLS and proxies -----------------------------------------------------------------------------


class ForwardProxy(socketserver.ThreadingTCPServer):
    """A small HTTP proxy: CONNECT tunnels, and absolute-form GETs forwarded one per connection.

    Records what it was asked: (method, target, Proxy-Authorization).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str, str | None]] = []

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: ForwardProxy

    def handle(self) -> None:
        request_line = self.rfile.readline().decode("latin-1").strip()
        if not request_line:
            return
        headers: list[tuple[str, str]] = []
        while (line := self.rfile.readline().decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        method, target, _ = request_line.split(" ", 2)
        auth = next((v for k, v in headers if k.lower() == "proxy-authorization"), None)
        self.server.seen.append((method, target, auth))
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._relay(upstream)
            return
        parts = urlsplit(target)
        upstream = socket.create_connection((parts.hostname or "", parts.port or 80))
        hop_by_hop = ("proxy-authorization", "connection")
        kept = [(k, v) for k, v in headers if k.lower() not in hop_by_hop]
        lines = [f"{method} {parts.path}?{parts.query} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in kept] + ["Connection: close", "", ""]
        upstream.sendall("\r\n".join(lines).encode("latin-1"))
        while data := upstream.recv(65536):
            self.wfile.write(data)
        upstream.close()

    def _relay(self, upstream: socket.socket) -> None:
        ends = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(ends, [], [], 10)
                if not readable:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is self.connection else self.connection).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("requests_ca_bundle", "curl_ca_bundle", "ssl_cert_file"):
        monkeypatch.delenv(name.upper(), raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def https_simulator(pki: dict[str, Path]) -> Iterator[FaultyServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["server_crt"], pki["server_key"])
    server = FaultyServer(FaultySimulator(ACCESS, SECRET, static_runs(RUNS)), tls=context).start()
    yield server
    server.stop()


CREDENTIALS = "Basic " + base64.b64encode(b"proxy-user:p@ss word").decode()


def test_http_api_through_a_forward_proxy_with_credentials(
    populated: FaultyServer, proxy: ForwardProxy, no_proxy_env: pytest.MonkeyPatch
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", f"http://proxy-user:p%40ss%20word@127.0.0.1:{proxy.port}")
    result = fetch(populated.base_url)
    assert set(result.runs) == expected_keys()
    origin = populated.base_url.removesuffix("/nsml/v1")
    assert len(proxy.seen) == 18
    for method, target, auth in proxy.seen:
        assert method == "GET"
        assert target.startswith(origin + "/nsml/v1/projects/runs?page=")
        assert auth == CREDENTIALS


def test_https_api_through_a_connect_tunnel(
    https_simulator: FaultyServer,
    proxy: ForwardProxy,
    no_proxy_env: pytest.MonkeyPatch,
    pki: dict[str, Path],
) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", f"http://proxy-user:p%40ss%20word@127.0.0.1:{proxy.port}")
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(pki["ca"]))
    base = https_simulator.base_url
    result = fetch(base, concurrency=4)
    assert set(result.runs) == expected_keys()
    tunnels = [(target, auth) for method, target, auth in proxy.seen if method == "CONNECT"]
    assert len(tunnels) == len(proxy.seen) <= 5  # kept alive through the tunnel
    assert {target for target, _ in tunnels} == {urlsplit(base).netloc}
    assert {auth for _, auth in tunnels} == {CREDENTIALS}


def test_no_proxy_goes_direct(
    populated: FaultyServer, proxy: ForwardProxy, no_proxy_env: pytest.MonkeyPatch
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    assert len(fetch(populated.base_url).runs) == RUNS
    assert proxy.seen == []


def test_an_untrusted_api_certificate_is_refused_and_says_so(
    https_simulator: FaultyServer, no_proxy_env: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConnectionFailedError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(https_simulator.base_url)
    assert https_simulator.sim.requests["runs"] == 0


@pytest.mark.process
@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_exporter_trusts_a_private_ca_from_the_environment(
    https_simulator: FaultyServer,
    pki: dict[str, Path],
    exporter_factory: Callable[..., ExporterProcess],
    variable: str,
) -> None:
    """What the README tells a user whose API sits behind a private CA."""
    env = {**exporter_env(), "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""}
    env[variable] = str(pki["ca"])
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = ""
    exporter = exporter_factory(*exporter_args_for(https_simulator), env=env)
    text = exporter.get().text
    assert "nsml_up 1.0" in text
    assert f"nsml_api_reported_runs {float(RUNS)}" in text


def test_a_netrc_entry_for_the_api_host_is_sent(
    populated: FaultyServer, no_proxy_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """requests' own convention: credentials for the API's host from ~/.netrc (or NETRC)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login gw-user password gw-pass\n")
    netrc.chmod(0o600)
    no_proxy_env.setenv("NETRC", str(netrc))
    seen: list[str | None] = []
    original = populated.sim.authenticate

    def recording(method: str, uri: str, headers: object) -> tuple[int, str] | None:
        seen.append(headers.get("Authorization"))  # type: ignore[attr-defined]
        return original(method, uri, headers)

    populated.sim.authenticate = recording  # type: ignore[method-assign]
    assert len(fetch(populated.base_url).runs) == RUNS
    assert set(seen) == {"Basic " + base64.b64encode(b"gw-user:gw-pass").decode()}


# -- units over a fake transport: Retry-After, the size limit, what is retried ----------------


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    """Bug caught: the sign flipped for the HTTP-date form (a date 30 s ahead read as 0)."""
    from email.utils import formatdate

    from exporter.nsml.api import retry_after

    ahead = retry_after(formatdate(time.time() + 30, usegmt=True))
    assert ahead is not None
    assert 28 <= ahead <= 31
    assert retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0  # past: at once
    assert retry_after("120") == 120.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def one_page_body() -> bytes:
    import json

    return json.dumps({"runList": [api_run("p1", "1")], "totalCount": 1}).encode()


@pytest.mark.parametrize(("slack", "accepted"), [(0, True), (1, True), (-1, False)])
def test_a_body_of_exactly_max_response_bytes_is_accepted(slack: int, accepted: bool) -> None:
    """Bug caught: `size >= MAX_RESPONSE_BYTES`, refusing a body exactly at the limit."""
    body = one_page_body() + b" " * 1024  # JSON allows trailing white space; over the 1024 floor
    adapter = FakeAdapter(lambda page, size: (200, body))
    client = NsmlClient(
        make_settings(max_response_bytes=len(body) + slack, retries=0), adapter=adapter
    )
    try:
        if accepted:
            assert len(fetch_runs(client, deadline=time.monotonic() + 10).runs) == 1
        else:
            with pytest.raises(InvalidResponseError, match="MAX_RESPONSE_BYTES"):
                fetch_runs(client, deadline=time.monotonic() + 10)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("status", "retried"),
    [(429, True), (500, True), (502, True), (503, True), (504, True), (400, False), (404, False)],
)
def test_which_statuses_are_asked_again(status: int, retried: bool) -> None:
    """Bug caught: any one status dropped from (or added to) the retryable set; 502 then 200
    with RETRIES=1 is a success."""
    answers = iter(
        [(status, {"error": {"errorCode": 900, "message": "x"}}), (200, one_page_body())]
    )
    adapter = FakeAdapter(lambda page, size: next(answers))
    # PAGE_SIZE at the fallback's size: a 400 is then final, not a smaller page asked again.
    client = NsmlClient(make_settings(retries=1, page_size=100), adapter=adapter)
    try:
        if retried:
            assert len(fetch_runs(client, deadline=time.monotonic() + 10).runs) == 1
        else:
            with pytest.raises(CollectionError):
                fetch_runs(client, deadline=time.monotonic() + 10)
    finally:
        client.close()
    assert len(adapter.calls) == (2 if retried else 1)


def test_an_unknown_host_is_named() -> None:
    """Bug caught (issue 28): a misspelt `--base-url` host failed as `[Errno -2] Name or
    service not known`, naming no host."""
    client = NsmlClient(make_settings(base_url="https://no-such-host.invalid/nsml/v1", retries=0))
    try:
        with pytest.raises(ConnectionFailedError) as caught:
            client.get_page(1)
    finally:
        client.close()
    assert "cannot resolve no-such-host.invalid (" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "HTTPSConnectionPool(host='x', port=443): Max retries exceeded (Caused by "
            "SSLError(SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version number "
            "(_ssl.c:1006)')))",
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006",
        ),
        ("word " * 60, "ConnectionError: " + ("word " * 36).strip() + " ..."),
        ("[Errno 111] Connection refused", "[Errno 111] Connection refused"),
    ],
    ids=["ssl", "long", "refused"],
)
def test_a_connection_failure_is_named_by_its_cause_cut_at_a_word(text: str, reason: str) -> None:
    """Bug caught (issue 28): an SSL error cut off mid-word (the first 200 characters of
    requests' message, the pool's repr first), so the log line ended `...(Caused by SSLEr`."""
    from requests import ConnectionError as RequestsConnectionError

    from exporter.nsml.api import short_reason

    assert short_reason(RequestsConnectionError(text), "x") == reason


def test_each_endpoint_is_counted_and_named_by_its_own_name(populated: FaultyServer) -> None:
    """Bugs caught: a request counted under another endpoint's label (or none) in
    `nsml_api_requests_total{endpoint}`, or an endpoint's failure not naming what was asked
    (`run 3 of project p0: HTTP 500`)."""
    from exporter.errors import HTTPStatusError
    from exporter.nsml.api import NsmlApi

    observed: list[tuple[str, str]] = []
    api = NsmlApi(
        make_settings(base_url=populated.base_url),
        observe=lambda endpoint, code, seconds: observed.append((endpoint, code)),
    )
    deadline = time.monotonic() + 10
    try:
        run = populated.sim.runs[0]
        api.get_page(1, deadline)
        api.get_projects(1, deadline)
        api.get_run(run.project_id, run.run_name, deadline)
        api.get_nodes(run.project_id, run.run_name, 1, deadline)
        assert observed == [("runs", "200"), ("projects", "200"), ("run", "200"), ("nodes", "200")]
        failed = {}
        for endpoint in ("projects", "run", "nodes"):
            populated.sim.resource_faults[endpoint] = 500
        for endpoint, call in (
            ("projects", lambda: api.get_projects(2, deadline)),
            ("run", lambda: api.get_run(run.project_id, run.run_name, deadline)),
            ("nodes", lambda: api.get_nodes(run.project_id, run.run_name, 3, deadline)),
        ):
            with pytest.raises(HTTPStatusError) as raised:
                call()
            failed[endpoint] = str(raised.value)
    finally:
        api.close()
    assert observed[4:] == [("projects", "500"), ("run", "500"), ("nodes", "500")]
    assert failed["projects"].startswith("projects page 2: HTTP 500")
    where = f"run {run.run_name} of project {run.project_id}"
    assert failed["run"].startswith(f"{where}: HTTP 500")
    assert failed["nodes"].startswith(f"nodes of {where}: HTTP 500")


def test_a_reason_is_whole_up_to_200_characters_then_cut_at_a_word() -> None:
    """Bugs caught: the bound off by one (a 200-character reason cut, or a 201-character one
    kept), a cut mid-word or without its " ...", an unknown host or an error without text
    said without its name."""
    from exporter.nsml.api import short_reason

    prefix = "ValueError: "
    exact = "a" * (200 - len(prefix))
    assert short_reason(ValueError(exact)) == prefix + exact
    words = ("word " * 60).strip()
    cut = short_reason(ValueError(words))
    assert cut == (prefix + words)[:200].rsplit(" ", 1)[0] + " ..."
    assert len(cut) <= 204 and cut.endswith("word ...")
    at_a_space = "w" * (200 - len(prefix) - 5) + " abcd" + " and more"  # a space at 201
    assert short_reason(ValueError(at_a_space)) == prefix + "w" * 183 + " ..."
    longer = "b" * (201 - len(prefix))
    assert short_reason(ValueError(longer)).endswith(" ...")
    assert short_reason(ValueError("")) == "ValueError"
    failed = "Max retries exceeded ([Errno -2] Name or service not known)"
    assert (
        short_reason(OSError(failed))
        == "cannot resolve the host ([Errno -2] Name or service not known)"
    )
    assert (
        short_reason(OSError("CERTIFICATE_VERIFY_FAILED here')"))
        == "CERTIFICATE_VERIFY_FAILED here"
    )


class Answering(HTTPAdapter):
    """A transport that answers every request with one status and body, noting each URL."""

    def __init__(self, status: int, body: dict[str, object], headers: dict[str, str]) -> None:
        super().__init__()
        self.status, self.body, self.headers, self.urls = status, body, headers, []

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> requests.Response:
        self.urls.append(request.url or "")
        raw = json.dumps(self.body).encode()
        answer = urllib3.HTTPResponse(
            body=io.BytesIO(raw),
            headers={"Content-Type": "application/json", **self.headers},
            status=self.status,
            preload_content=False,
        )
        return self.build_response(request, answer)


def test_a_run_is_asked_for_by_its_path_with_every_character_escaped() -> None:
    """Bug caught: a project id or run name with `/` (or `?`) sent unescaped, so the detail
    of another resource is asked for, or none."""
    from exporter.nsml.api import NsmlApi

    answering = Answering(200, {"engFullName": "x", "nodes": [], "totalCount": 0}, {})
    api = NsmlApi(make_settings(), adapter=answering)
    try:
        api.get_run("team/a", "run/?7", time.monotonic() + 10)
        api.get_nodes("team/a", "run/?7", 1, time.monotonic() + 10)
    finally:
        api.close()
    paths = [urlsplit(url).path for url in answering.urls]
    assert paths == [
        "/nsml/v1/projects/team%2Fa/runs/run%2F%3F7",
        "/nsml/v1/projects/team%2Fa/runs/run%2F%3F7/nodes",
    ]


def test_an_api_error_is_said_with_its_message_code_and_details() -> None:
    """Bugs caught: the API's own words dropped from the error (its message, errorCode or
    details), or a long body not cut at 300 characters; a 401's clock skew (from the answer's
    Date) said with the wrong sign."""
    from email.utils import formatdate

    from exporter.errors import AuthError, HTTPStatusError
    from exporter.nsml.api import NsmlApi

    error = {"errorCode": 100, "message": "Bad Request", "details": "pageSize too big"}
    api = NsmlApi(make_settings(), adapter=Answering(400, {"error": error}, {}))
    with pytest.raises(HTTPStatusError) as raised:
        api.get_page(1, time.monotonic() + 10)
    assert str(raised.value).endswith("Bad Request (errorCode 100): pageSize too big")
    long = {"errorCode": 100, "message": "x" * 400}
    api = NsmlApi(make_settings(), adapter=Answering(400, {"error": long}, {}))
    with pytest.raises(HTTPStatusError) as cut:
        api.get_page(1, time.monotonic() + 10)
    assert ("x" * 299) in str(cut.value) and ("x" * 300) not in str(cut.value)
    ahead = formatdate(time.time() + 600, usegmt=True)  # the API's clock 10 minutes ahead
    denied = {"errorCode": 200, "message": "Authentication Failed"}
    api = NsmlApi(make_settings(), adapter=Answering(401, {"error": denied}, {"Date": ahead}))
    with pytest.raises(AuthError) as auth:
        api.get_page(1, time.monotonic() + 10)
    assert re.search(r"local clock is -(599|600|601)s off the API's", str(auth.value)), auth.value


class Resetting(socketserver.ThreadingTCPServer):
    """Accepts, reads a request, and resets the connection (RST, no answer): a broken load
    balancer. Counts the connections made to it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.connections = 0
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.server.connections += 1  # type: ignore[attr-defined]
            self.request.recv(65536)
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.request.close()


def test_a_reset_connection_is_asked_again_once_not_for_ever() -> None:
    """Bug caught (issue 27, found by mutation): the one urllib3 retry for a kept-alive
    connection closed as it was reused made, on its failure, a new retry with the whole
    allowance again: an API behind a balancer that resets every connection was asked about a
    thousand times for one page, outside the exporter's count of requests and its deadline,
    until Python's recursion limit ended it. Now: once, then once more for each connection of
    the pool (2 * CONCURRENCY + 1), any of which a keep-alive timeout may have closed."""
    server = Resetting()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        with pytest.raises(ConnectionFailedError):
            fetch(f"http://{host}:{port}/nsml/v1", concurrency=2)
        assert server.connections == 1 + (2 * 2 + 1) + 1
    finally:
        server.shutdown()
        server.server_close()


def observed_api(adapter: HTTPAdapter, **settings: Any) -> tuple[Any, list[tuple[str, str]]]:
    """An `NsmlApi` over `adapter`, and the (endpoint, code) of each request it observes."""
    from exporter.nsml.api import NsmlApi

    seen: list[tuple[str, str]] = []
    api = NsmlApi(
        make_settings(**settings),
        lambda endpoint, code, seconds: seen.append((endpoint, code)),
        adapter=adapter,
    )
    return api, seen


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        (lambda page, size: (200, b"{not json"), InvalidResponseError, "invalid"),
        (
            lambda page, size: (200, {"runList": [], "totalCount": -1}),
            InvalidResponseError,
            "invalid",
        ),
        (
            lambda page, size: (_ for _ in ()).throw(TimeoutError("slow")),
            RequestTimeoutError,
            "timeout",
        ),
        (lambda page, size: (300, {}), HTTPStatusError, "300"),
        (lambda page, size: (200, {"runList": [], "totalCount": 0}), None, "200"),
    ],
    ids=["not json", "not a page", "timeout", "300", "ok"],
)
def test_each_request_is_counted_by_its_outcome(
    answer: Any, error: type[Exception] | None, code: str
) -> None:
    """Bugs caught: `nsml_api_requests_total{code}` counting a failure under another outcome
    (an invalid body as a connection failure), or a 300 taken for a success."""
    api, seen = observed_api(FakeAdapter(answer))
    try:
        if error is None:
            api.get_page(1, time.monotonic() + 10)
        else:
            with pytest.raises(error):
                api.get_page(1, time.monotonic() + 10)
    finally:
        api.close()
    assert seen == [("runs", code)]


def test_a_refused_connection_is_counted_as_connection() -> None:
    """Bug caught: a connection that never answered counted as an HTTP status."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    api, seen = observed_api(HTTPAdapter(), base_url=f"http://127.0.0.1:{port}/nsml/v1")
    try:
        with pytest.raises(ConnectionFailedError) as caught:
            api.get_projects(1, time.monotonic() + 10)
    finally:
        api.close()
    assert seen == [("projects", "connection")]
    assert caught.value.retryable


def test_a_timeout_is_retryable_unless_the_deadline_cut_it() -> None:
    """Bugs caught: a request that waited its whole REQUEST_TIMEOUT not asked again, or one
    cut by COLLECT_TIMEOUT said as REQUEST_TIMEOUT's."""

    def slow(page: int, size: int) -> Any:
        raise TimeoutError("slow")

    api, _ = observed_api(FakeAdapter(slow), request_timeout=5)
    try:
        with pytest.raises(RequestTimeoutError) as whole:
            api.get_page(1, time.monotonic() + 60)
        with pytest.raises(RequestTimeoutError) as cut:
            api.get_page(1, time.monotonic() + 2)
    finally:
        api.close()
    assert str(whole.value) == "page 1: no answer within REQUEST_TIMEOUT (5s)"
    assert whole.value.retryable
    assert str(cut.value) == "page 1: COLLECT_TIMEOUT reached while waiting for it"
    assert not cut.value.retryable


@pytest.mark.parametrize(("status", "error"), [(429, ThrottledError), (503, HTTPStatusError)])
def test_a_429_or_503_keeps_its_retry_after(status: int, error: type[CollectionError]) -> None:
    """Bug caught: a 429's or 503's `Retry-After` dropped: the retry comes sooner than the
    gateway allows, and is refused again."""
    from exporter.nsml.api import NsmlApi

    api = NsmlApi(make_settings(), adapter=Answering(status, {}, {"Retry-After": "7"}))
    try:
        with pytest.raises(error) as caught:
            api.get_page(1, time.monotonic() + 10)
    finally:
        api.close()
    assert (caught.value.retryable, caught.value.retry_after) == (True, 7.0)


@pytest.mark.parametrize(("offset", "said"), [(-120, True), (-50, False), (45, False)])
def test_a_401_says_when_the_clock_is_off(offset: float, said: bool) -> None:
    """Bugs caught: a refused signature from a clock minutes off said without the cause (the
    API's `Date` is read under another name, or the bound is not 60 s)."""
    from email.utils import formatdate

    from exporter.nsml.api import NsmlApi

    date = formatdate(time.time() + offset, usegmt=True)
    api = NsmlApi(make_settings(), adapter=Answering(401, {}, {"Date": date}))
    try:
        with pytest.raises(AuthError) as caught:
            api.get_page(1, time.monotonic() + 10)
    finally:
        api.close()
    if said:  # `Date` is whole seconds: the skew read is 120 s or a second more
        assert re.fullmatch(
            r"page 1: HTTP 401; the local clock is \+12[01]s off the API's: signatures are "
            r"accepted only within 5 minutes, check NTP",
            str(caught.value),
        )
    else:
        assert str(caught.value) == "page 1: HTTP 401"


def test_an_oversized_detail_names_the_details_limit() -> None:
    """Bug caught: a run detail over its own limit said as over MAX_RESPONSE_BYTES (a setting
    that does not govern it), or the run list held to the details' limit."""
    from exporter.nsml.api import DETAIL_MAX_BYTES, NsmlApi

    body = {"engFullName": "x" * (DETAIL_MAX_BYTES + 10)}
    api = NsmlApi(make_settings(), adapter=Answering(200, body, {}))
    try:
        with pytest.raises(InvalidResponseError) as caught:
            api.get_run("p", "r", time.monotonic() + 10)
    finally:
        api.close()
    assert str(caught.value) == (
        f"run r of project p: response is over the details' limit ({DETAIL_MAX_BYTES})"
    )


def test_every_request_asks_for_gzipped_json_and_names_the_exporter() -> None:
    """Bugs caught: JSON not asked for (a gateway may answer XML or HTML), gzip not offered
    (ten times the bytes for a long history), the `User-Agent` not the exporter's (an API
    operator cannot tell its requests from others')."""
    from exporter.nsml.api import USER_AGENT

    adapter = FakeAdapter(lambda page, size: (200, {"runList": [], "totalCount": 0}))
    client = NsmlClient(make_settings(), adapter=adapter)
    try:
        fetch_runs(client, deadline=time.monotonic() + 10)
    finally:
        client.close()
    headers = adapter.calls[0].headers
    assert headers["Accept"] == "application/json"
    assert headers["Accept-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("nsml-exporter/")


def test_ssl_cert_file_is_trusted_unless_requests_is_told_otherwise(
    no_proxy_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bugs caught: `SSL_CERT_FILE` (what Python's ssl module honours, and the image sets)
    ignored by requests, or put above `REQUESTS_CA_BUNDLE`; the environment read again on
    every request."""
    from exporter.nsml.session import api_session

    ours, theirs = tmp_path / "ours.pem", tmp_path / "theirs.pem"
    no_proxy_env.setenv("SSL_CERT_FILE", str(ours))
    session = api_session("https://nsml.example/nsml/v1", None, pool=1, user_agent="x")
    assert (session.verify, session.trust_env) == (str(ours), False)
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", str(theirs))
    session = api_session("https://nsml.example/nsml/v1", None, pool=1, user_agent="x")
    assert session.verify == str(theirs)
