"""One HTTP request: read strictly, authorised, routed, answered.

Framing as RFC 9112 asks of a server that takes no bodies: a request with a body, a second
`Content-Length` or any `Transfer-Encoding` gets 400 and the connection closed (nothing behind it
is read as a request); a header field line that is no `name: value` (whitespace before the colon,
no colon, an obsolete folded line) gets 400; empty lines before a request line are skipped; no
`100 Continue` is sent. `/healthz` never needs credentials. The header block may hold at most
`MAX_HEADER_BYTES` (431 past that, read no further); one that ends before its blank line (the
client hung up, or `HEADER_TIMEOUT` cut it) is no request and costs nothing. HTTP/1.1 needs one
valid `Host`; `Host` and `Authorization` may come once; `Connection` is read as a list.
"""

from __future__ import annotations

import html
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import urlsplit

from .. import __version__
from .exposition import Exposition
from .negotiation import FORMATS, gzip_accepted, negotiate
from .webconfig import AuthBusy, WebConfig

log = logging.getLogger(__name__)

LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>NSML Exporter</title></head>
<body><h1>NSML Exporter</h1>
<p>Prometheus exporter for NAVER Cloud CLOVA NSML runs, version {version}.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="healthz">Health</a></li></ul>
</body></html>
"""
TEXT = "text/plain; charset=utf-8"
NOT_ACCEPTABLE = (
    "Not Acceptable. Served: "
    + ", ".join(f"{f.media_type}; version={f.version}" for f in FORMATS)
    + "\n"
).encode()


#: Empty lines skipped before a request line (RFC 9112 section 2.2); more is no request.
MAX_EMPTY_LINES = 4
#: The longest request line (http.server's own limit for the line it reads first: 414 past it).
MAX_REQUEST_LINE = 65536
#: The most bytes of header field lines one request may send: Prometheus sends about 300, a
#: browser a few KiB (Go's servers allow 1 MiB; nothing here needs that).
MAX_HEADER_BYTES = 16 * 1024
#: Header fields that may come once (RFC 9110: a second one is an error, not a list).
SINGLETONS = ("Host", "Authorization", "Content-Length")
#: uri-host [ ":" port ] (RFC 9110 section 7.2): a reg-name, IPv4 or a bracketed IPv6 literal.
HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")


class HeaderReader:
    """The connection's reader, counting one request's header bytes from `start()` on: past
    `limit` it reads no further and ends the header block, and it remembers whether the block
    ended with its blank line or with the connection."""

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self.counted = -1  # not counting: the request line is read as it is
        self.over = False
        self.last = b"\r\n"

    def start(self) -> None:
        self.counted, self.over, self.last = 0, False, b"\r\n"

    def readline(self, size: int = -1) -> bytes:
        if self.counted < 0:
            line: bytes = self._raw.readline(size)
            return line
        if self.over:
            return b"\r\n"
        line = self._raw.readline(size)
        self.last = line
        self.counted += len(line)
        if self.counted > self._limit:
            self.over = True
            return b"\r\n"
        return line

    def stop(self) -> None:
        self.counted = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class Served(Protocol):
    """What a request needs of the server that accepted it (`server.ExporterServer`)."""

    exposition: Exposition
    web: WebConfig
    header_timeout: float
    response_timeout: float
    stopping: threading.Event

    def watch(
        self, sock: socket.socket, seconds: float, idle: bool = False, what: str = ""
    ) -> None: ...

    def unwatch(self, sock: socket.socket) -> None: ...


class Handler(BaseHTTPRequestHandler):
    server: Served  # type: ignore[assignment]
    raw_requestline: bytes
    protocol_version = "HTTP/1.1"
    # A request line without a version gets an HTTP/1.0 status line, not a bare body.
    default_request_version = "HTTP/1.0"
    # Headers and body go out in separate writes: without TCP_NODELAY a keep-alive client's
    # delayed ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    timeout = None  # the watchdog owns every deadline

    def version_string(self) -> str:
        return "nsml-exporter"  # no versions before any login

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.reader = HeaderReader(self.rfile, MAX_HEADER_BYTES)
        self.rfile = self.reader  # type: ignore[assignment]  # a reader that counts

    def handle_one_request(self) -> None:
        self.server.watch(self.connection, self.server.header_timeout, idle=True)
        self.reader.stop()
        try:
            super().handle_one_request()
        finally:
            self.server.unwatch(self.connection)
        if self.server.stopping.is_set():
            self.close_connection = True

    def parse_request(self) -> bool:
        for _ in range(MAX_EMPTY_LINES):  # RFC 9112: empty lines before a request line
            if self.raw_requestline not in (b"\r\n", b"\n"):
                break
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if not self.raw_requestline:  # the client hung up after empty lines: no request
            self.close_connection = True
            return False
        if len(self.raw_requestline) > MAX_REQUEST_LINE:  # as http.server does for the first
            self.command, self.requestline = "", ""
            self.request_version = self.default_request_version
            self.send_error(414)
            return False
        if not self.raw_requestline.strip():
            self.command, self.requestline = "", ""  # what send_error reads
            self.request_version = self.default_request_version
            self.send_error(400, "no request line")
            return False
        self.reader.start()
        parsed = super().parse_request()
        self.reader.stop()
        if self.reader.last == b"":
            # The connection ended inside the header block: no request to answer.
            self.close_connection = True
            return False
        if self.reader.over:
            self.send_error(431, f"header fields over {MAX_HEADER_BYTES} bytes")
            return False
        if not parsed:
            return False
        problem = self._header_problem()
        if problem:
            self.send_error(400, problem)
            return False
        if "close" in self._tokens("Connection"):
            self.close_connection = True
        what = f"{self.client_address[0]} {self.command} {self.path[:100]!r}"
        self.server.watch(self.connection, self.server.response_timeout, what=what)
        return True

    def _header_problem(self) -> str:
        """What makes the header fields unacceptable (RFC 9110, 9112), or nothing."""
        headers = self.headers
        if headers.defects or any("\n" in v or "\0" in v for v in headers.values()):
            return "malformed header field"
        for name in SINGLETONS:
            if len(headers.get_all(name) or []) > 1:
                return f"more than one {name}"
        lengths = headers.get_all("Content-Length") or []
        if headers.get_all("Transfer-Encoding") or lengths not in ([], ["0"]):
            return "a request here has no body"
        host = headers.get("Host")
        if host is None and self.request_version == "HTTP/1.1":
            return "HTTP/1.1 needs a Host"
        if host is not None and not HOST.fullmatch(host.strip()):
            return "invalid Host"
        return ""

    def _tokens(self, name: str) -> set[str]:
        """A list-valued header's elements, lower case (`keep-alive, close`)."""
        return {t.strip().lower() for v in self.headers.get_all(name) or [] for t in v.split(",")}

    def handle_expect_100(self) -> bool:
        return True  # no "100 Continue": a body is refused, a request without one is answered

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True  # what follows a bad request on this connection is unknown
        self._send(code, [f"{code} {message or self.responses.get(code, ('',))[0]}\n".encode()])

    def _send(
        self,
        status: int,
        body: list[bytes],
        content_type: str = TEXT,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(map(len, body))))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            for piece in body:
                self.wfile.write(piece)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, [b"ok\n"])
            return
        auth = self.server.web.auth
        if auth is not None:
            try:
                allowed = auth.check(self.headers.get("Authorization"))
            except AuthBusy:
                self.close_connection = True
                self._send(429, [b"too many login attempts, try again\n"], headers=RETRY)
                return
            if not allowed:
                self.close_connection = True
                self._send(401, [b"Unauthorized\n"], headers=CHALLENGE)
                return
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            body = LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, [body], "text/html; charset=utf-8")
        else:
            self._send(404, [b"Not Found\n"])

    def _header(self, name: str) -> str | None:
        """A header's field lines joined, as RFC 9110 says a list-valued header is combined."""
        values = self.headers.get_all(name)
        return ", ".join(values) if values else None

    def _metrics(self) -> None:
        choice = negotiate(self._header("Accept"))
        if choice is None:
            self._send(406, [NOT_ACCEPTABLE], headers=VARY)
            return
        gzipped = gzip_accepted(self._header("Accept-Encoding"))
        try:
            body = self.server.exposition.render(choice, gzipped)
        except Exception:
            log.exception("rendering /metrics failed")
            self._send(500, [b"internal error, see the exporter's log\n"])
            return
        headers = {**VARY, "Content-Encoding": "gzip"} if gzipped else VARY
        self._send(200, body, choice.content_type, headers)


CHALLENGE = {"WWW-Authenticate": 'Basic realm="nsml-exporter", charset="UTF-8"'}
RETRY = {"Retry-After": "1"}
VARY = {"Vary": "Accept, Accept-Encoding"}
