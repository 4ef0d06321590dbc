"""Hostile and careless requests, round 3 (issue 22), over real sockets: exactly one status line
per request, nothing answered for a request that never ended, header bytes bounded, signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from exporter.web.handler import MAX_HEADER_BYTES
from tests.fake_api import FaultyServer
from tests.helpers.process import (
    ExporterProcess,
    exporter_args_for,
    exporter_env,
    raw,
    start_exporter,
    status_lines,
)
from tests.helpers.runs import static_runs


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    exporter = start_exporter(tmp_path_factory.mktemp("hostile"), ["--demo"])
    yield exporter
    exporter.stop()


def cpu_seconds(pid: int) -> float:
    """CPU the process has used (user and system, all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_status(served: ExporterProcess, request: bytes, wait: float = 3) -> str:
    """The one status code `request` gets (fails on none, or on two)."""
    answer = raw(served, request, wait=wait)
    lines = status_lines(answer)
    assert len(lines) == 1, answer[:300]
    return lines[0].split(" ")[1]


CLOSE = b"Connection: close\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # Item 7: more empty lines than are skipped, or a line of spaces, is no request line.
        (b"\r\n" * 4 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"\r\n", "200"),
        (b"\r\n" * 5 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"\r\n", "400"),
        (b"   \r\nGET /healthz HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"\r\n", "400"),
        # Item 10: HTTP/1.1 needs exactly one valid Host; a NUL is no header value.
        (b"GET /healthz HTTP/1.1\r\n" + CLOSE + b"\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + CLOSE + b"\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: a b\r\n" + CLOSE + b"\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: a/b\r\n" + CLOSE + b"\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n" + CLOSE + b"\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: [::1]:9877\r\n" + CLOSE + b"\r\n", "200"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: exporter.monitoring.svc:9877\r\n" + CLOSE + b"\r\n",
            "200",
        ),
        (b"GET /healthz HTTP/1.0\r\n\r\n", "200"),  # HTTP/1.0 needs none
        # Item 11: a second Authorization is an error, not a second chance.
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\n"
            b"Authorization: Basic YzpE\r\n" + CLOSE + b"\r\n",
            "400",
        ),
        # Issue 22's survivor: a GET that says it has no body (Content-Length: 0) is answered.
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + CLOSE + b"\r\n", "200"),
        # Items 6 and 12: an unbalanced quote, an empty parameter.
        (b'GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain"\r\n' + CLOSE + b"\r\n", "200"),
        (
            b'GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;a="\r\n' + CLOSE + b"\r\n",
            "200",
        ),
    ],
    ids=[
        "four-empty-lines",
        "five-empty-lines",
        "spaces-line",
        "no-host",
        "two-hosts",
        "host-with-space",
        "host-with-slash",
        "nul-in-value",
        "ipv6-host",
        "dns-host",
        "http-1.0-no-host",
        "two-authorizations",
        "content-length-0",
        "unbalanced-accept",
        "unbalanced-accept-encoding",
    ],
)
@pytest.mark.process
def test_exactly_one_status_line(
    served: ExporterProcess, request_bytes: bytes, status: str
) -> None:
    """Bugs caught: a connection closed with no status line (five empty lines, an
    AssertionError on a quote), a request without Host or with two answered 200."""
    assert one_status(served, request_bytes) == status
    assert served.get("/healthz").status_code == 200
    assert "Traceback" not in served.logs()


@pytest.mark.process
def test_an_empty_parameter_is_allowed(served: ExporterProcess) -> None:
    """Bug caught (item 12): `version=1.0.0;` dropped, so text 0.0.4 was served to a client
    that asked for OpenMetrics only."""
    response = served.get(headers={"Accept": "application/openmetrics-text;version=1.0.0;"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")


@pytest.mark.process
def test_keep_alive_close_is_read_as_close(served: ExporterProcess) -> None:
    """Bug caught (item 9): `Connection: keep-alive, close` taken for keep-alive, the socket
    held until HEADER_TIMEOUT: a request pipelined behind it would be answered too."""
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n"
    answer = raw(served, first + b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"\r\n", 8)
    assert answer.count(b"HTTP/1.1 200 OK") == 1


@pytest.mark.parametrize(
    ("padding", "status"), [(0, "200"), (1, "431")], ids=["at-the-limit", "one-byte-over"]
)
@pytest.mark.process
def test_header_bytes_are_bounded(served: ExporterProcess, padding: int, status: str) -> None:
    """Bug caught: the bound off by one, or not applied (any size read and negotiated)."""
    fixed = b"Host: x\r\n" + CLOSE + b"X-Pad: \r\n" + b"\r\n"
    pad = b"a" * (MAX_HEADER_BYTES - len(fixed) + padding)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + CLOSE + b"X-Pad: " + pad + b"\r\n\r\n"
    assert one_status(served, request) == status


@pytest.mark.process
def test_a_huge_accept_is_refused_at_once_without_credentials(served: ExporterProcess) -> None:
    """Bug caught (item 4): 20 header lines of 64 KB negotiated for seconds of CPU."""
    line = b"Accept: " + b"," * 65000 + b"\r\n"
    before = cpu_seconds(served.proc.pid)
    code = one_status(served, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + line * 20 + b"\r\n", 10)
    assert code == "431"
    # The work, not the wait (a busy machine stretches the wait): negotiating these lines took
    # seconds of CPU; refusing them takes what reading 1.3 MB of bytes does.
    assert cpu_seconds(served.proc.pid) - before < 0.5
    assert served.get().status_code == 200


@pytest.fixture
def backed(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> tuple[FaultyServer, ExporterProcess]:
    simulator.sim.set_runs(static_runs(30))
    exporter = exporter_factory(*exporter_args_for(simulator), env=exporter_env())
    # Reading begins at start: a scrape waits for that first read, so none is under way after.
    assert exporter.get().status_code == 200
    return simulator, exporter


@pytest.mark.process
@pytest.mark.parametrize("how", ["half-close", "header-timeout"])
def test_a_request_that_never_ends_costs_nothing(
    backed: tuple[FaultyServer, ExporterProcess], how: str
) -> None:
    """Bug caught (item 8): the header block's end taken for granted, so a request cut before
    its blank line was answered and read the run list (three API calls)."""
    server, exporter = backed
    before = server.sim.requests["runs"]
    host, port = exporter.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n")
        if how == "half-close":
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    assert b"nsml_up" not in b"".join(chunks)
    assert server.sim.requests["runs"] == before


@pytest.mark.process
def test_sighup_and_sigusr1_are_logged_and_ignored(served: ExporterProcess) -> None:
    """Bug caught (item 13): the default action, which ends the process mid-scrape with nothing
    logged."""
    for sent in (signal.SIGHUP, signal.SIGUSR1):
        served.proc.send_signal(sent)
    said = ("received SIGHUP: ignored", "received SIGUSR1: ignored")
    deadline = time.monotonic() + 10
    while not all(line in served.logs() for line in said):
        assert time.monotonic() < deadline, served.logs()
        time.sleep(0.1)
    assert served.proc.poll() is None
    assert served.get().status_code == 200


@pytest.mark.process
def test_a_second_sigterm_ends_the_grace(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Bug caught (item 13): a second SIGTERM or SIGINT during SHUTDOWN_GRACE ignored, so the
    process waits out the whole grace for a slow scrape."""
    simulator.sim.set_runs(static_runs(30))
    simulator.sim.latency = 20.0
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--shutdown-grace", "60", "--collect-timeout", "30"),
        env=exporter_env(),
    )

    def slow_scrape() -> None:
        with contextlib.suppress(requests.RequestException):  # cut when the process ends
            exporter.get(timeout=60)

    scrape = threading.Thread(target=slow_scrape, daemon=True)
    scrape.start()
    time.sleep(1.0)  # the scrape waits on the slow API
    exporter.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert exporter.proc.poll() is None  # still waiting for the scrape in flight
    exporter.proc.send_signal(signal.SIGINT)
    assert exporter.proc.wait(10) == 0  # the API answers the scrape only 20 s after it began
    assert "again: not waiting for answers in flight" in exporter.logs()
    simulator.sim.latency = 0.0


@pytest.mark.process
def test_a_plain_scrape_after_a_gzip_one_gets_plain_bytes(served: ExporterProcess) -> None:
    """Bug caught (issue 22's survivors): the shared render of a collection keyed by format
    only, so a plain scrape right after a gzip one got the gzip bytes without
    Content-Encoding."""
    served.get(headers={"Accept-Encoding": "gzip"})
    plain = served.get(headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.content.startswith(b"# HELP")
    zipped = served.get(headers={"Accept-Encoding": "gzip"}, stream=True)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.raw.read(2, decode_content=False) == b"\x1f\x8b"
