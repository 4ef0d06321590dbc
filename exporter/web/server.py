"""HTTP: `/metrics`, a landing page at `/`, and `/healthz`, with optional TLS and basic auth.

The standard library's threaded server, held to what an exposed endpoint needs (measured reasons,
and why not uvicorn or hypercorn: docs/http-server.md):
- a watchdog owns every deadline: `HEADER_TIMEOUT` for the TLS handshake and the request to
  arrive whole, however slowly it trickles; `COLLECT_TIMEOUT` plus `ANSWER_TIMEOUT` for an answer;
- `MAX_CONNECTIONS`: at the cap, the connection idle longest (waiting for a request, or in a
  handshake) is closed to make room, so silent sockets cannot lock out health checks and
  scrapers; only when every connection has a request in flight is a newcomer answered 503;
- requests read strictly (handler.py);
- SIGTERM: stop accepting, answer the backlog 503, close idle connections, let answers in flight
  finish within `SHUTDOWN_GRACE`, and name those that did not.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from .exposition import Exposition
from .handler import TEXT, Handler
from .webconfig import WebConfig

log = logging.getLogger(__name__)


def _canned(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {TEXT}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


BUSY = _canned("503 Service Unavailable", b"too many connections, bye\n")
STOPPING = _canned("503 Service Unavailable", b"shutting down\n")
PLAIN_TO_TLS = _canned("400 Bad Request", b"this port speaks HTTPS.\n")
CLIENT_GONE = (ConnectionError, TimeoutError, ssl.SSLError)
#: How long a client has to take an answer once it is ready.
ANSWER_TIMEOUT = 60.0


@dataclass
class _Watched:
    deadline: float
    idle: bool  # waiting for a request (or in a TLS handshake): first to go at the cap
    since: float
    what: str = ""


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        exposition: Exposition,
        web: WebConfig,
        *,
        max_connections: int = 512,
        header_timeout: float = 10.0,
        collect_timeout: float = 9.0,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self.exposition = exposition
        self.web = web
        self.header_timeout = header_timeout
        self.response_timeout = collect_timeout + answer_timeout
        self.stopping = threading.Event()
        self.hurry = threading.Event()  # stop waiting for answers in flight
        self._stopped = threading.Event()  # `stop` returned: the watchdog ends
        self._max_connections = max_connections
        self._active = 0
        self._lock = threading.Condition()
        self._watched: dict[socket.socket, _Watched] = {}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        threading.Thread(target=self._watch, name="http-watchdog", daemon=True).start()

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        scheme = "https" if self.web.ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    # -- connections: a cap that makes room by closing the longest idle ----------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self._active >= self._max_connections
            victim = self._take_longest_idle() if full else None
            admitted = not full or victim is not None
            if admitted:
                self._active += 1
        if victim is not None:
            _cut(victim)
        if not admitted:
            log.debug("refused %s: every connection has a request in flight", client_address[0])
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def _take_longest_idle(self) -> socket.socket | None:
        """The connection idle longest, no longer watched; the caller holds the lock."""
        idle = [(watched.since, sock) for sock, watched in self._watched.items() if watched.idle]
        if not idle:
            return None
        victim = min(idle, key=lambda pair: pair[0])[1]
        del self._watched[victim]
        return victim

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def watch(
        self, sock: socket.socket, seconds: float, idle: bool = False, what: str = ""
    ) -> None:
        now = time.monotonic()
        with self._lock:
            self._watched[sock] = _Watched(now + seconds, idle, now, what)

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            self._watched.pop(sock, None)
            self._lock.notify_all()

    def _watch(self) -> None:
        """Cut what is late, and idle connections once stopping; a last pass after `stop`."""
        while True:
            stopped = self._stopped.wait(0.25)
            now = time.monotonic()
            with self._lock:
                stopping = self.stopping.is_set()
                late = [
                    sock
                    for sock, watched in self._watched.items()
                    if now > watched.deadline or (stopping and watched.idle)
                ]
                for sock in late:
                    del self._watched[sock]
                self._lock.notify_all()
            for sock in late:
                _cut(sock)
            if stopped:
                return

    def stop(self, grace: float) -> list[str]:
        """Stop accepting, answer the backlog 503, close idle connections, let answers in
        flight finish within `grace` seconds. Returns those still unfinished then."""
        self.stopping.set()
        self.shutdown()
        self._answer_backlog()
        self.server_close()
        ends = time.monotonic() + grace
        with self._lock:
            # In slices: a second signal (`hurry`) ends the wait.
            while not self.hurry.is_set() and time.monotonic() < ends:
                done = self._lock.wait_for(
                    lambda: all(w.idle for w in self._watched.values()),
                    min(0.1, max(0.0, ends - time.monotonic())),
                )
                if done:
                    break
            self._stopped.set()
            return sorted(w.what for w in self._watched.values() if not w.idle)

    def _answer_backlog(self, budget: float = 2.0) -> None:
        """Connections already queued get a status line, not a reset (within `budget`)."""
        ends = time.monotonic() + budget
        self.socket.setblocking(False)
        while time.monotonic() < ends:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            try:
                connection.settimeout(max(0.05, min(1.0, ends - time.monotonic())))
                if self.web.ssl_context is not None:
                    connection = self.web.ssl_context.wrap_socket(connection, server_side=True)
                connection.sendall(STOPPING)
                # Read what the client sent before closing: closing on unread data resets the
                # connection, and the client may lose the answer.
                connection.recv(65536)
            except OSError:
                pass
            finally:
                connection.close()

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
            # The handshake runs on the SSL socket, watched as itself: the raw socket gives its
            # file descriptor to it and could no longer be shut down.
            secure = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS with %s failed: %s", client_address[0], error)
            return
        finally:
            self.unwatch(request)
        try:
            self.watch(secure, self.header_timeout, idle=True)
            try:
                secure.do_handshake()
            except (ssl.SSLError, OSError) as error:
                log.debug("TLS handshake with %s failed: %s", client_address[0], error)
                return
            finally:
                self.unwatch(secure)
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


def _cut(sock: socket.socket) -> None:
    """Shut a connection down under the thread blocked on it: its read gets EOF, its write
    fails, and it ends. The plain socket's shutdown, even for an SSL socket, whose own would
    reset its TLS state under the other thread."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
