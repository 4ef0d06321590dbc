"""HTTP: `/metrics`, a landing page at `/`, and `/healthz`, with optional TLS and basic auth.

The standard library's threaded server, held to what an exposed endpoint needs: a connection cap,
a deadline for a request to arrive whole (a watchdog shuts overdue sockets), a status line for
every request, no body on a GET, one debug line for a client that hangs up, and a graceful stop.
Why not cheroot, waitress or gunicorn: docs/http-server.md. `/healthz` never needs credentials.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import logging
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from .. import __version__
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
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 25\r\nConnection: close\r\n\r\ntoo many connections, bye\n"
)
PLAIN_TO_TLS = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 24\r\nConnection: close\r\n\r\nthis port speaks HTTPS.\n"
)
CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        web: WebConfig,
        *,
        max_connections: int = 512,
        header_timeout: float = 10.0,
        response_timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        self.web = web
        self.header_timeout = header_timeout
        self.response_timeout = response_timeout
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Condition()
        # (deadline, idle) per connection: idle while its request arrives, in flight after.
        self._deadlines: dict[socket.socket, tuple[float, bool]] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        threading.Thread(target=self._watch, name="http-watchdog", daemon=True).start()

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        scheme = "https" if self.web.ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    # -- connections: a cap, and deadlines kept by a watchdog --------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("refused a connection from %s: MAX_CONNECTIONS reached", client_address[0])
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def watch(self, sock: socket.socket, seconds: float, idle: bool = False) -> None:
        with self._lock:
            self._deadlines[sock] = (time.monotonic() + seconds, idle)

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)
            self._lock.notify_all()

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                stopping = self.stopping.is_set()
                late = [
                    sock
                    for sock, (deadline, idle) in self._deadlines.items()
                    if now > deadline or (stopping and idle)
                ]
                for sock in late:
                    del self._deadlines[sock]
                self._lock.notify_all()
            for sock in late:
                # The thread blocked on it reads EOF, or its write fails: it ends.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self, grace: float) -> bool:
        """Stop accepting, close idle connections, let requests in flight finish within `grace`
        seconds. True when none was left unfinished."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        with self._lock:
            in_flight = self._deadlines.values
            return self._lock.wait_for(lambda: all(i for _, i in in_flight()), timeout=grace)

    # -- TLS and errors ----------------------------------------------------------------------

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.web.ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        self.watch(request, self.header_timeout, idle=True)
        try:
            first = request.recv(1, socket.MSG_PEEK)
            if first and first != b"\x16":  # not a TLS handshake: someone spoke plain HTTP
                request.sendall(PLAIN_TO_TLS)
                return
            secure = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS handshake with %s failed: %s", client_address[0], error)
            return
        finally:
            self.unwatch(request)
        try:
            super().finish_request(secure, client_address)
        finally:
            secure.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never a traceback: a client that hangs up is not the exporter's error."""
        error = sys.exc_info()[1]
        if isinstance(error, CLIENT_GONE):
            log.debug("connection from %s ended: %s", client_address[0], error)
        else:
            log.error("request from %s failed: %r", client_address[0], error)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    # A request line without a version gets an HTTP/1.0 status line, not a bare body.
    default_request_version = "HTTP/1.0"
    # Headers and body go out in separate writes: without TCP_NODELAY a keep-alive client's
    # delayed ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    timeout = 30

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
        if not super().parse_request():
            return False
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0":
            self.send_error(400, "a request here has no body")
            return False
        self.server.watch(self.connection, self.server.response_timeout)  # now in flight
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True  # what follows a bad request on this connection is unknown
        self._send(code, f"{code} {message or self.responses.get(code, ('',))[0]}\n".encode())

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = TEXT,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, b"ok\n")
            return
        auth = self.server.web.auth
        if auth is not None:
            try:
                allowed = auth.check(self.headers.get("Authorization"))
            except AuthBusy:
                self.close_connection = True
                self._send(429, b"too many login attempts, try again\n", headers=RETRY)
                return
            if not allowed:
                self.close_connection = True
                self._send(401, b"Unauthorized\n", headers=CHALLENGE)
                return
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            body = LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, body, "text/html; charset=utf-8")
        else:
            self._send(404, b"Not Found\n")

    def _header(self, name: str) -> str | None:
        """A header's field lines joined, as RFC 9110 says a list-valued header is combined."""
        values = self.headers.get_all(name)
        return ", ".join(values) if values else None

    def _metrics(self) -> None:
        choice = negotiate(self._header("Accept"))
        if choice is None:
            self._send(406, NOT_ACCEPTABLE, headers=VARY)
            return
        try:
            body = choice.encoder(self.server.registry)
        except Exception:
            log.exception("rendering /metrics failed")
            self._send(500, b"internal error, see the exporter's log\n")
            return
        headers = dict(VARY)
        if gzip_accepted(self._header("Accept-Encoding")):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, choice.content_type, headers)


CHALLENGE = {"WWW-Authenticate": 'Basic realm="nsml-exporter", charset="UTF-8"'}
RETRY = {"Retry-After": "1"}
VARY = {"Vary": "Accept, Accept-Encoding"}
