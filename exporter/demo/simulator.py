"""A stand-in for the NSML API behind an NCP-style gateway: the run list, and the projects, run
details and node lists of `resources.py`.

It checks signatures like the gateway (access key, HMAC signature over the URI as sent, timestamp
within 5 minutes, API key when configured), pages 1-based (or 0-based when asked), answers errors
with the documented bodies, and serves a lively population: projects (one with a non-ASCII name),
notebooks and trainings, several creators, statuses beyond the documented two, runs that start,
run, and then complete, fail or are stopped as time passes. Times are naive `YYYY-MM-DD HH:MM:SS`
in the simulator's zone (KST by default). The list (`listing.py`) is newest first or in an
arbitrary order, may cap `pageSize` as a gateway may, and changes under a reader.

It gzips bodies when asked to, and serves HTTPS given a certificate. `GET /_sim/stats` counts
what it served, the most requests it had in flight at once, and the runs listed now;
`GET /_sim/truth` the runs listed now by status (both read-only).
It takes no commands: fault injection lives under `tests/`. Alone: `python -m exporter.demo`.
"""

from __future__ import annotations

import gzip
import json
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from ..nsml.signing import gateway_check
from . import resources
from .churn import truth
from .gateway import error_body, served_page_size
from .listing import Listing
from .population import SimRun

BASE_PATH = "/nsml/v1"
RUNS_PATH = f"{BASE_PATH}/projects/runs"


@dataclass
class Simulator:
    """The API's state. Thread-safe for the server's use; tests may change the public fields."""

    access_key: str
    secret_key: str
    runs: list[SimRun] = field(default_factory=list)
    api_key: str | None = None
    zone: str = "Asia/Seoul"
    first_page: int = 1
    latency: float = 0.0
    clock_offset: float = 0.0
    #: gzip bodies for clients that accept it.
    gzip: bool = False
    #: "newest" (newest first) or "arbitrary"; the most items a page holds, and whether a larger
    #: pageSize is refused with 400 rather than capped silently.
    order: str = "newest"
    max_page_size: int | None = None
    refuse_large_pages: bool = False
    #: "all", "runs" (run-list pages served), status codes, "connections", "gzip".
    requests: Counter[str] = field(default_factory=Counter)
    #: Signatures received (newest last), so tests can check none of them is ever logged.
    signatures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._fragments: dict[tuple[str, str, str, float], bytes] = {}
        self._tz = ZoneInfo(self.zone)
        self.listing = Listing(order=self.order)
        self.set_runs(self.runs)

    def set_runs(self, runs: list[SimRun]) -> None:
        self.runs = sorted(runs, key=lambda r: r.created)
        self.listing.set(self.runs)

    def find(self, project_id: str, run_name: str, now: float) -> SimRun | None:
        return self.listing.find((project_id, run_name), now)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def visible(self, now: float) -> list[SimRun]:
        return self.listing.visible(now)

    def count(self, label: str, by: int = 1) -> None:
        with self._lock:
            self.requests[label] += by
            peak = max(self.requests["in_flight_max"], self.requests["in_flight"])
            self.requests["in_flight_max"] = peak

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.requests, "listed": self.listing.page(self.now(), 0, 0)[1]}

    def format_time(self, moment: float) -> str:
        return datetime.fromtimestamp(moment, self._tz).strftime("%Y-%m-%d %H:%M:%S")

    def render(self, run: SimRun, now: float) -> dict[str, Any]:
        status, updated = run.state(now)
        return {
            "runName": run.run_name,
            "runType": run.run_type,
            "projectId": run.project_id,
            "projectName": run.project_name,
            "status": status,
            "creator": run.creator,
            "createTime": self.format_time(run.created),
            "updateTime": self.format_time(updated),
        }

    def authenticate(self, method: str, uri: str, headers: Any) -> tuple[int, str] | None:
        """None when the gateway would let the request through, else (status, details)."""
        given = headers.get("x-ncp-apigw-signature-v2", "")
        if given:
            with self._lock:
                self.signatures = [*self.signatures[-99:], given]
        return gateway_check(
            headers,
            method,
            uri,
            access_key=self.access_key,
            secret_key=self.secret_key,
            api_key=self.api_key,
            now=self.now(),
        )

    def run_list_bytes(self, page: int, size: int) -> bytes:
        """`run_list_page` serialized, from cached per-run JSON (a run's JSON changes only when
        its state does): the stand-in should cost next to nothing, so that benchmarks measure
        the exporter."""
        now = self.now()
        runs, total = self.listing.page(now, (page - self.first_page) * size, size)
        parts = []
        for run in runs:
            status, updated = run.state(now)
            # By identity and state, never id(): a run deleted or replaced frees its object,
            # and a new run may take its address.
            key = (run.project_id, run.run_name, status, updated)
            fragment = self._fragments.get(key)
            if fragment is None:
                fragment = json.dumps(self.render(run, now), ensure_ascii=False).encode()
                self._fragments[key] = fragment
            parts.append(fragment)
        return b'{"runList":[' + b",".join(parts) + b'],"totalCount":%d}' % total


class SimulatorHandler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY a keep-alive client's
    # delayed ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(self.server.sim.now() if timestamp is None else timestamp, usegmt=True)

    def setup(self) -> None:
        super().setup()
        self.server.sim.count("connections")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        sim = self.server.sim
        headers = dict(extra or {})
        accepts = "gzip" in self.headers.get("Accept-Encoding", "")
        if sim.gzip and accepts and "Content-Encoding" not in headers:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
            sim.count("gzip")
        self._write(status, body, content_type, headers)

    def _write(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        """The answer on the wire, framed by Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on this page: nothing to tell

    def _error(self, status: int, details: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, error_body(status, details), extra=extra)

    def do_GET(self) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        if parts.path == "/_sim/stats":
            self._send(200, json.dumps(sim.stats()).encode())
            return
        if parts.path == "/_sim/truth":  # the runs listed now by status: costs a pass over them
            self._send(200, json.dumps(truth(sim.listing, sim.now())).encode())
            return
        sim.count("all")
        sim.count("in_flight")
        try:
            self._answer(sim, parts.path, parts.query)
        finally:
            sim.count("in_flight", -1)

    def _answer(self, sim: Simulator, path: str, query_string: str) -> None:
        denied = sim.authenticate("GET", self.path, self.headers)
        if denied is not None:
            sim.count(str(denied[0]))
            self._error(*denied)
            return
        if not path.startswith(BASE_PATH + "/"):
            self._error(404, f"no resource at {path}")
            return
        query = parse_qs(query_string)
        try:
            page = int(query.get("page", ["1"])[0])
            size = int(query.get("pageSize", ["10"])[0])
        except ValueError:
            self._error(400, "page and pageSize must be integers")
            return
        if page < sim.first_page or size < 1:
            self._error(400, f"page must be >= {sim.first_page} and pageSize >= 1")
            return
        served = served_page_size(size, sim.max_page_size, sim.refuse_large_pages)
        if served is None:
            self._error(400, f"pageSize must be <= {sim.max_page_size}")
            return
        if sim.latency:
            time.sleep(sim.latency)
        if path != RUNS_PATH:
            self.answer_resource(path.removeprefix(BASE_PATH), page, served)
            return
        sim.count("runs")
        self.answer_page(page, served)

    def answer_resource(self, path: str, page: int, size: int) -> None:
        """The projects, a run's detail or its nodes."""
        found = resources.answer(self.server.sim, path, page, size)
        if found is None:
            self._error(404, f"no resource at {BASE_PATH}{path}")
        elif found[0] == 200:
            self._send(200, json.dumps(found[1], ensure_ascii=False).encode())
        else:
            self._error(*found)

    def answer_page(self, page: int, size: int) -> None:
        self._send(200, self.server.sim.run_list_bytes(page, size))


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    handler: type[SimulatorHandler] = SimulatorHandler

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sim = sim
        self.stopping = threading.Event()
        super().__init__((host, port), self.handler)
        self._scheme = "http"
        if tls is not None:  # HTTPS, as the real gateway serves
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (as the exporter does at its deadline) is not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}{BASE_PATH}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self.serve_forever, name="nsml-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
