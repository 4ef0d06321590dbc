"""One HTTP request: read strictly, authorised, routed, answered.

Framing as RFC 9112 asks of a server that takes no bodies: a request with a body, a second
`Content-Length` or any `Transfer-Encoding` gets 400 and the connection closed (nothing behind it
is read as a request); a header field line that is no `name: value` (whitespace before the colon,
no colon, an obsolete folded line) gets 400; empty lines before a request line are skipped; no
`100 Continue` is sent. `/healthz` never needs credentials.
"""

from __future__ import annotations

import html
import logging
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


#: Empty lines skipped before a request line (RFC 9112 section 2.2).
MAX_EMPTY_LINES = 4


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

    def handle_one_request(self) -> None:
        self.server.watch(self.connection, self.server.header_timeout, idle=True)
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
            self.raw_requestline = self.rfile.readline(65537)
        if not super().parse_request():
            return False
        headers = self.headers
        lengths = headers.get_all("Content-Length") or []
        if headers.defects or any("\n" in value for value in headers.values()):
            self.send_error(400, "malformed header field")
            return False
        if headers.get_all("Transfer-Encoding") or len(lengths) > 1 or lengths not in ([], ["0"]):
            self.send_error(400, "a request here has no body")
            return False
        what = f"{self.client_address[0]} {self.command} {self.path[:100]!r}"
        self.server.watch(self.connection, self.server.response_timeout, what=what)
        return True

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
