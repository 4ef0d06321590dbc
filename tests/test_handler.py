"""The HTTP handler in-process: one `ExporterServer` on a loopback port, serving a canned
exposition, fed raw bytes. The request line and header block as RFC 9112 frames them, where no
exporter process is needed to show it (the process-level cases are in test_server_hostile)."""

from __future__ import annotations

import gzip
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.web.handler import MAX_HEADER_BYTES, MAX_REQUEST_LINE
from exporter.web.negotiation import Choice
from exporter.web.server import ExporterServer
from exporter.web.webconfig import WebConfig
from tests.helpers.http import exchange as exchange_with

pytestmark = pytest.mark.unit

BODY = b"nsml_up 1.0\n"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class Canned:
    """An exposition that answers at once (the collection is not the point here)."""

    def render(self, choice: Choice, gzipped: bool) -> list[bytes]:
        return [gzip.compress(BODY) if gzipped else BODY]


@pytest.fixture(scope="module")
def server() -> Iterator[ExporterServer]:
    served = ExporterServer(("127.0.0.1", 0), Canned(), WebConfig(), header_timeout=2)  # type: ignore[arg-type]
    served.serve_in_thread()
    yield served
    served.stop(1)


def exchange(server: ExporterServer, data: bytes, wait: float = 3.0) -> bytes:
    """Send `data` to `server` on a new connection, then read until it closes it (or `wait`)."""
    host, port = server.server_address[:2]
    return exchange_with((str(host), int(port)), data, wait)


def statuses(answer: bytes) -> list[str]:
    """The status codes in `answer`, in order (a status line may follow a body's last byte)."""
    return [code.decode() for code in STATUS_LINE.findall(answer)]


def request(head: str = "GET /healthz HTTP/1.1", *fields: str) -> bytes:
    lines = [head, "Host: x", *fields, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def test_a_long_request_line_after_empty_lines_gets_414(server: ExporterServer) -> None:
    """Bug caught (issue 27): the line read after skipped empty lines escaped http.server's
    limit, so an over-long request line was parsed (and answered) instead of refused."""
    target = "/healthz?" + "a" * MAX_REQUEST_LINE
    assert statuses(exchange(server, b"\r\n" + request(f"GET {target} HTTP/1.1"))) == ["414"]
    assert statuses(exchange(server, request(f"GET {target} HTTP/1.1"))) == ["414"]


def test_a_request_line_at_the_limit_after_empty_lines_is_answered(server: ExporterServer) -> None:
    """Bug caught: the bound applied one byte short (a line of exactly the limit refused)."""
    head = "GET /healthz?" + "a" * (MAX_REQUEST_LINE - len("GET /healthz? HTTP/1.1\r\n"))
    head += " HTTP/1.1"
    assert len(head) + 2 == MAX_REQUEST_LINE
    assert statuses(exchange(server, b"\r\n" + request(head))) == ["200"]


@pytest.mark.parametrize("empty", [b"\r\n", b"\n", b"\r\n\n\r\n"], ids=["crlf", "lf", "mixed"])
def test_empty_lines_then_a_hang_up_get_no_answer(server: ExporterServer, empty: bytes) -> None:
    """Bug caught (issue 27): a client that sent empty lines and hung up got a 400 written to
    a closed connection, against the handler's docstring: no request, no answer."""
    with socket.create_connection(server.server_address[:2], timeout=3) as sock:  # type: ignore[arg-type]
        sock.sendall(empty)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""


@pytest.mark.parametrize("empty", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_an_empty_line_before_the_request_line_is_skipped(
    server: ExporterServer, empty: bytes
) -> None:
    """Bug caught: a bare-LF empty line (RFC 9112 2.2 allows LF alone) not skipped like CRLF."""
    assert statuses(exchange(server, empty + request())) == ["200"]


@pytest.mark.parametrize(
    ("padding", "status"), [(0, "200"), (1, "431")], ids=["at-the-limit", "one-byte-over"]
)
def test_the_header_block_is_bounded_to_the_byte(
    server: ExporterServer, padding: int, status: str
) -> None:
    """Bug caught: a bound of 16,000 (or one off by one): exactly MAX_HEADER_BYTES of field
    lines are read, one more byte gets 431."""
    fixed = len("Host: x\r\nConnection: close\r\nX-Pad: \r\n\r\n")  # the blank line too
    pad = "X-Pad: " + "p" * (MAX_HEADER_BYTES - fixed + padding)
    answer = exchange(server, request("GET /healthz HTTP/1.1", pad))
    assert statuses(answer) == [status]


@pytest.mark.parametrize(
    "host", ["[::ffff:10.0.0.1]:9877", "[::1]", "exporter.monitoring.svc:9877", "10.0.0.1"]
)
def test_valid_hosts_are_accepted(server: ExporterServer, host: str) -> None:
    """Bug caught: an IPv6 literal (an IPv4-mapped one included) refused as an invalid Host."""
    data = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    assert statuses(exchange(server, data)) == ["200"]


def test_connection_tokens_are_compared_without_case(server: ExporterServer) -> None:
    """Bug caught: `Connection: keep-alive, Close` kept open (tokens compared with case): a
    request pipelined behind it would be answered too."""
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n"
    assert statuses(exchange(server, first + request())) == ["200"]
    kept = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    assert statuses(exchange(server, kept + request())) == ["200", "200"]  # the baseline


def test_a_query_string_does_not_change_the_path(server: ExporterServer) -> None:
    """Bug caught: `/healthz?probe=1` routed as an unknown path (404)."""
    assert statuses(exchange(server, request("GET /healthz?probe=1 HTTP/1.1"))) == ["200"]


connection_tokens = st.lists(
    st.sampled_from(["close", "Close", "CLOSE", "keep-alive", "Keep-Alive", "upgrade", "te"]),
    min_size=1,
    max_size=4,
)


@given(tokens=connection_tokens, spaces=st.lists(st.sampled_from(["", " ", "  "]), min_size=8))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_connection_closes_exactly_when_a_token_says_close(
    server: ExporterServer, tokens: list[str], spaces: list[str]
) -> None:
    """The model: a connection is closed after the answer exactly when one of the header's
    comma-separated tokens is `close`, in any case and with any spacing. Bugs caught: tokens
    compared with case, spaces kept in a token, only the first or last token read."""
    value = ",".join(f"{spaces[i]}{token}{spaces[i + 4]}" for i, token in enumerate(tokens))
    first = f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: {value}\r\n\r\n".encode()
    answered = statuses(exchange(server, first + request()))
    closes = any(token.lower() == "close" for token in tokens)
    assert answered == (["200"] if closes else ["200", "200"])
