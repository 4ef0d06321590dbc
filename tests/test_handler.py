"""The HTTP handler in-process: one `ExporterServer` on a loopback port, serving a canned
exposition, fed raw bytes. The request line and header block as RFC 9112 frames them, where no
exporter process is needed to show it (the process-level cases are in test_server_hostile)."""

from __future__ import annotations

import base64
import gzip
import html
import logging
import re
import socket
from collections.abc import Iterator

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.web.handler import MAX_HEADER_BYTES, MAX_REQUEST_LINE
from exporter.web.negotiation import Choice
from exporter.web.server import ExporterServer
from exporter.web.webconfig import AuthBusy, BasicAuth, WebConfig
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


def test_a_header_block_cut_by_a_hang_up_gets_no_answer_and_no_error(
    server: ExporterServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bugs caught: a request whose client hung up inside its header block answered as if
    whole (its missing fields taken as absent), or a hang-up after empty lines logged as the
    exporter's error."""
    for sent in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"\r\n"):
        with socket.create_connection(server.server_address[:2], timeout=3) as sock:  # type: ignore[arg-type]
            sock.sendall(sent)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1024) == b""
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("before", [b"", b"\r\n"], ids=["first", "after-empty-lines"])
def test_a_request_line_that_never_ends_gets_414_at_the_limit(
    server: ExporterServer, before: bytes
) -> None:
    """Bug caught: the request line read without a bound: a client sending a line that never
    ends is read into memory until it stops, and answered nothing meanwhile."""
    answer = exchange(server, before + b"GET /" + b"a" * (MAX_REQUEST_LINE + 10), wait=3)
    assert statuses(answer) == ["414"]


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


# -- every answer, byte for byte --------------------------------------------------------------


class Switchable:
    """An exposition whose body says the format it was asked for, or that fails on demand."""

    failing = False

    def render(self, choice: Choice, gzipped: bool) -> list[bytes]:
        if self.failing:
            raise RuntimeError("a bug in rendering")
        body = f"{choice.content_type}\n".encode()
        return [gzip.compress(body, mtime=0) if gzipped else body]


PASSWORD_HASH = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4))


@pytest.fixture(scope="module")
def routed() -> Iterator[tuple[ExporterServer, Switchable]]:
    exposition = Switchable()
    auth = BasicAuth({"prom": PASSWORD_HASH})
    served = ExporterServer(("127.0.0.1", 0), exposition, WebConfig(auth=auth), header_timeout=2)  # type: ignore[arg-type]
    served.serve_in_thread()
    yield served, exposition
    served.stop(1)


TEXT = "text/plain; charset=utf-8"
VARY = "Vary: Accept, Accept-Encoding"
PLAIN_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = (
    "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
)


def without_date(answer: bytes) -> str:
    """The answer as text, its `Date` line left out (the one field that changes)."""
    return re.sub(r"Date: [^\r]*\r\n", "", answer.decode("latin-1"))


def authorised(*fields: str, user: str = "prom", password: str = "right") -> tuple[str, ...]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return (f"Authorization: Basic {token}", *fields)


def head(status: str, length: int, *fields: str, content_type: str = TEXT) -> str:
    lines = [
        f"HTTP/1.1 {status}",
        "Server: nsml-exporter",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Connection: close",
        *fields,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_healthz_needs_no_credentials(routed: tuple[ExporterServer, Switchable]) -> None:
    """Bugs caught: the probe behind basic auth (a kubelet has no password: the pod restarts
    for ever), its body or headers changed."""
    answer = exchange(routed[0], request("GET /healthz HTTP/1.1"))
    assert without_date(answer) == head("200 OK", 3) + "ok\n"


def test_a_scrape_without_credentials_is_challenged(
    routed: tuple[ExporterServer, Switchable],
) -> None:
    """Bugs caught: no `WWW-Authenticate` (a browser never asks for the password), the
    connection kept open after a failed login, the body or status changed."""
    challenge = 'WWW-Authenticate: Basic realm="nsml-exporter", charset="UTF-8"'
    for fields in ((), authorised(password="wrong"), authorised(user="mallory")):
        answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *fields))
        assert without_date(answer) == head("401 Unauthorized", 13, challenge) + "Unauthorized\n"


def test_a_scrape_is_answered_in_the_negotiated_format(
    routed: tuple[ExporterServer, Switchable],
) -> None:
    """Bugs caught: the `Accept` header not read (or another header read for it), the
    content type not the one chosen, no `Vary` (a cache would serve one client's format to
    another)."""
    answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *authorised()))
    body = f"{PLAIN_TYPE}\n"
    assert without_date(answer) == head("200 OK", len(body), VARY, content_type=PLAIN_TYPE) + body
    accept = "Accept: application/openmetrics-text;version=1.0.0"
    answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *authorised(accept)))
    body = f"{OPENMETRICS_TYPE}\n"
    expected = head("200 OK", len(body), VARY, content_type=OPENMETRICS_TYPE) + body
    assert without_date(answer) == expected


def test_a_gzip_scrape_says_its_encoding(routed: tuple[ExporterServer, Switchable]) -> None:
    """Bugs caught: a gzipped body sent without `Content-Encoding: gzip` (Prometheus would
    parse the compressed bytes), or `Accept-Encoding` not read."""
    fields = authorised("Accept-Encoding: gzip")
    answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *fields))
    body = gzip.compress(f"{PLAIN_TYPE}\n".encode(), mtime=0)
    expected = head("200 OK", len(body), VARY, "Content-Encoding: gzip", content_type=PLAIN_TYPE)
    assert without_date(answer) == expected + body.decode("latin-1")


def test_an_unservable_accept_is_406_listing_the_formats(
    routed: tuple[ExporterServer, Switchable],
) -> None:
    """Bug caught: a client that accepts none of the formats sent one anyway, or told nothing
    of what is served."""
    answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *authorised("Accept: x/y")))
    body = (
        "Not Acceptable. Served: text/plain; version=0.0.4, "
        "application/openmetrics-text; version=1.0.0, text/plain; version=1.0.0, "
        "application/openmetrics-text; version=0.0.1\n"
    )
    assert without_date(answer) == head("406 Not Acceptable", len(body), VARY) + body


def test_a_failed_render_is_500_and_logged(
    routed: tuple[ExporterServer, Switchable], caplog: pytest.LogCaptureFixture
) -> None:
    """Bugs caught: a bug in rendering dropping the connection with no answer, or answered
    without a word in the log."""
    server, exposition = routed
    exposition.failing = True
    try:
        answer = exchange(server, request("GET /metrics HTTP/1.1", *authorised()))
    finally:
        exposition.failing = False
    body = "internal error, see the exporter's log\n"
    assert without_date(answer) == head("500 Internal Server Error", len(body)) + body
    (record,) = [r for r in caplog.records if r.getMessage() == "rendering /metrics failed"]
    assert record.exc_info is not None


def test_the_landing_page_and_unknown_paths(routed: tuple[ExporterServer, Switchable]) -> None:
    """Bugs caught: the landing page's links, type or escaping; an unknown path answered as
    something; HEAD sending a body (a keep-alive client would read it as the next answer)."""
    from exporter import __version__
    from exporter.web.handler import LANDING

    answer = exchange(routed[0], request("GET / HTTP/1.1", *authorised()))
    page = LANDING.format(version=html.escape(__version__))
    expected = head("200 OK", len(page.encode()), content_type="text/html; charset=utf-8")
    assert without_date(answer) == expected + page
    assert '<a href="metrics">Metrics</a>' in page
    answer = exchange(routed[0], request("GET /nope HTTP/1.1", *authorised()))
    assert without_date(answer) == head("404 Not Found", 10) + "Not Found\n"
    answer = exchange(routed[0], request("HEAD /nope HTTP/1.1", *authorised()))
    assert without_date(answer) == head("404 Not Found", 10)


def test_a_flood_of_logins_is_refused_with_429(
    routed: tuple[ExporterServer, Switchable], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bugs caught: a client refused for a busy bcrypt told nothing of when to come back, or
    its connection kept open."""

    def busy(self: BasicAuth, header: str | None) -> bool:
        raise AuthBusy("too many password checks at once")

    monkeypatch.setattr(BasicAuth, "check", busy)
    answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *authorised()))
    body = "too many login attempts, try again\n"
    assert without_date(answer) == head("429 Too Many Requests", len(body), "Retry-After: 1") + body


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (("Host: y",), "more than one Host"),
        (("Authorization: a", "Authorization: b"), "more than one Authorization"),
        (("Content-Length: 0", "Content-Length: 0"), "more than one Content-Length"),
        (("Content-Length: 5",), "a request here has no body"),
        (("Transfer-Encoding: chunked",), "a request here has no body"),
        (("X-Bad: a\0b",), "malformed header field"),
    ],
)
def test_a_bad_header_block_is_400_naming_the_problem(
    server: ExporterServer, fields: tuple[str, ...], problem: str
) -> None:
    """Bugs caught: any one of RFC 9110's and 9112's checks skipped, or said in other words
    (the body is what a user debugging a proxy reads)."""
    answer = exchange(server, request("GET /healthz HTTP/1.1", *fields))
    body = f"400 {problem}\n"
    assert without_date(answer) == head("400 Bad Request", len(body)) + body


def test_hosts_are_checked_by_version(server: ExporterServer) -> None:
    """Bugs caught: HTTP/1.1 without `Host` answered, HTTP/1.0 without one refused, a
    `Content-Length: 0` refused as a body, an invalid `Host` taken."""
    no_host = b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
    body = "400 HTTP/1.1 needs a Host\n"
    assert without_date(exchange(server, no_host)) == head("400 Bad Request", len(body)) + body
    old = b"GET /healthz HTTP/1.0\r\n\r\n"
    assert statuses(exchange(server, old)) == ["200"]
    empty = request("GET /healthz HTTP/1.1", "Content-Length: 0")
    assert statuses(exchange(server, empty)) == ["200"]
    bad = b"GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"
    assert without_date(exchange(server, bad)).endswith("400 invalid Host\n")


def test_oversized_headers_and_blank_request_lines_are_named(server: ExporterServer) -> None:
    """Bugs caught: the 431's or 400's words; a request line of spaces taken as a request."""
    pad = "X-Pad: " + "p" * MAX_HEADER_BYTES
    body = f"431 header fields over {MAX_HEADER_BYTES} bytes\n"
    expected = head("431 Request Header Fields Too Large", len(body)) + body
    assert without_date(exchange(server, request("GET /healthz HTTP/1.1", pad))) == expected
    body = "400 no request line\n"
    expected = head("400 Bad Request", len(body)) + body
    assert without_date(exchange(server, b"\r\n   \r\n")) == expected


def test_each_request_is_logged_at_debug_with_its_client_line_and_status(
    server: ExporterServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bugs caught: the access line (at DEBUG, for finding who scrapes and how) missing the
    client's address, the request line or the status."""
    caplog.set_level("DEBUG", logger="exporter.web.handler")
    exchange(server, request("GET /healthz HTTP/1.1"))
    said = [r.getMessage() for r in caplog.records if r.name == "exporter.web.handler"]
    assert said == ['127.0.0.1 "GET /healthz HTTP/1.1" 200 -']


def test_expect_100_continue_is_answered_without_a_100(server: ExporterServer) -> None:
    """Bug caught: a request saying `Expect: 100-continue` (curl sends it for bodies) left
    unanswered."""
    answer = exchange(server, request("GET /healthz HTTP/1.1", "Expect: 100-continue"))
    assert statuses(answer) == ["200"]


def test_accept_field_lines_are_read_as_one_list(routed: tuple[ExporterServer, Switchable]) -> None:
    """Bug caught (RFC 9110 5.3): two `Accept` lines not combined with a comma, so the first
    line's last element and the second's first ran together and were dropped."""
    fields = authorised("Accept: application/openmetrics-text;version=1.0.0", "Accept: x/y")
    answer = exchange(routed[0], request("GET /metrics HTTP/1.1", *fields))
    assert f"Content-Type: {OPENMETRICS_TYPE}\r\n" in without_date(answer)


def test_a_request_http_server_refuses_is_answered_once(
    server: ExporterServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug caught: a request line http.server refuses (an HTTP version it does not speak)
    answered with its error, then handled as a request too (a second answer, or an error
    logged as the exporter's)."""
    assert statuses(exchange(server, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")) == ["505"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
