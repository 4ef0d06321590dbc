"""HTTP: `/metrics`, a landing page at `/`, and `/healthz`, with optional TLS and basic auth.

A threaded server: a slow scraper holds only its own thread. TLS handshakes happen in the
connection's thread too, never in the accept loop. `/healthz` never needs credentials, so
Kubernetes probes work with basic auth on.
"""

from __future__ import annotations

import gzip
import html
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__
from .webconfig import WebConfig

log = logging.getLogger(__name__)

LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>NSML Exporter</title></head>
<body><h1>NSML Exporter</h1>
<p>Prometheus exporter for NAVER Cloud CLOVA NSML runs, version {version}.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="healthz">Health</a></li></ul>
</body></html>
"""


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        web: WebConfig,
    ) -> None:
        self.registry = registry
        self.web = web
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        scheme = "https" if self.web.ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.web.ssl_context
        if context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_Handler.timeout)
        try:
            secure = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS handshake with %s failed: %s", client_address[0], error)
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            secure.close()

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY a keep-alive client's
    # delayed ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    timeout = 30
    server_version = f"nsml-exporter/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
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
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        auth = self.server.web.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            self._send(
                401,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Basic realm="nsml-exporter", charset="UTF-8"'},
            )
            return
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            body = LANDING.format(version=html.escape(__version__)).encode()
            self._send(200, body, "text/html; charset=utf-8")
        else:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception:
            log.exception("rendering /metrics failed")
            self._send(
                500, b"internal error, see the exporter's log\n", "text/plain; charset=utf-8"
            )
            return
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, content_type, headers)
