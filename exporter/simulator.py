"""A stand-in for the NSML API: `GET /nsml/v1/projects/runs` behind an NCP-style gateway.

It checks signatures like the gateway (access key, HMAC signature over the URI as sent, timestamp
within 5 minutes, API key when configured), pages 1-based (or 0-based when asked), answers errors
with the documented bodies, and serves a lively population: projects (one with a non-ASCII name),
notebooks and trainings, several creators, statuses beyond the documented two, runs that start,
run, and then complete, fail or are stopped as time passes. Times are naive `YYYY-MM-DD HH:MM:SS`
in the simulator's zone (KST by default), newest run first.

It can answer the way gateways and load balancers do: gzip when the client accepts it, chunked
bodies, and keep-alive connections closed without notice after a few requests.

For tests it can be told to misbehave (`Fault`): an HTTP error with or without `Retry-After`, a
page that never answers, HTML, truncated JSON, wrong types, missing fields, an oversized body, a
gzip bomb, a connection reset mid-body, and paging that ignores `page`, never ends, or lies about
`totalCount`.

Run it alone with `python -m exporter.simulator --help`.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import hmac
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from .signing import signature

BASE_PATH = "/nsml/v1"
RUNS_PATH = f"{BASE_PATH}/projects/runs"
TIMESTAMP_WINDOW_MS = 5 * 60 * 1000

PENDING = "RUN_STATE_PENDING"
IN_PROGRESS = "RUN_STATE_IN_PROGRESS"
COMPLETED = "RUN_STATE_COMPLETED"
FAILED = "RUN_STATE_FAILED"
STOPPED = "RUN_STATE_STOPPED"

#: HTTP status -> (errorCode, message), as the NCP gateway documents them.
ERRORS: dict[int, tuple[str | int, str]] = {
    400: (100, "Bad Request Exception"),
    401: ("200", "Authentication Failed"),
    403: ("230", "Forbidden"),
    404: (300, "Not Found Exception"),
    413: (430, "Request Entity Too Large"),
    429: ("420", "Rate Limited"),
    500: (900, "Unexpected Error"),
    503: (500, "Endpoint Error"),
    504: (510, "Endpoint Timeout"),
}

PROJECTS = (
    ("k3x9ygz0iujnq2w4e6r8", "vision-research"),
    ("m1n2b3v4c5x6z7l8k9j0", "llm-pretrain"),
    ("a7s8d9f0g1h2j3k4l5q6", "음성인식-팀"),  # a non-ASCII project name, as Korean teams use
    ("p0o9i8u7y6t5r4e3w2q1", "recsys"),
)
CREATORS = tuple(f"ncp-user-{n}" for n in (2689076, 1183402, 5520931, 7741205, 3309818))


@dataclass(frozen=True, slots=True)
class SimRun:
    """A run's whole life: when it is created, how long it waits, runs, and how it ends."""

    project_id: str
    project_name: str
    run_name: str
    run_type: str
    creator: str
    created: float
    pending: float
    duration: float | None  # None: never ends (a forgotten notebook)
    outcome: str

    def state(self, now: float) -> tuple[str, float]:
        """(status, updateTime) at `now`."""
        started = self.created + self.pending
        if now < started:
            return PENDING, self.created
        if self.duration is None or now < started + self.duration:
            return IN_PROGRESS, started
        return self.outcome, started + self.duration


def generate_population(
    count: int,
    now: float,
    *,
    seed: int = 7,
    span: float = 3 * 86400,
    future_rate: float = 0.0,
    future_span: float = 86400,
) -> list[SimRun]:
    """`count` runs created over the last `span` seconds, plus new ones every 1/`future_rate` s."""
    rng = random.Random(seed)
    times = sorted(now - rng.uniform(0, span) for _ in range(count))
    if future_rate > 0:
        moment = now
        while moment < now + future_span:
            moment += rng.expovariate(future_rate)
            times.append(moment)
    serial: Counter[str] = Counter()
    runs = []
    for created in times:
        project_id, project_name = rng.choice(PROJECTS)
        serial[project_id] += 1
        notebook = rng.random() < 0.4
        roll = rng.random()
        if notebook:
            duration = None if roll < 0.15 else rng.uniform(600, 8 * 3600)
            outcome = STOPPED if rng.random() < 0.7 else COMPLETED
        else:
            duration = rng.uniform(120, 12 * 3600)
            outcome = FAILED if roll < 0.2 else STOPPED if roll < 0.25 else COMPLETED
        runs.append(
            SimRun(
                project_id=project_id,
                project_name=project_name,
                run_name=str(serial[project_id]),
                run_type="NOTEBOOK" if notebook else "TRAIN",
                creator=rng.choice(CREATORS),
                created=float(int(created)),
                pending=float(rng.choice((0, 5, 30, 120))),
                duration=duration,
                outcome=outcome,
            )
        )
    return runs


@dataclass
class Fault:
    """A misbehaviour. `pages`: only these page numbers (None: all); `times`: then recover."""

    kind: str  # status, hang, html, truncated, wrong_types, missing_fields, oversized,
    # gzip_bomb, reset, ignore_page, forever, total_high, total_low, slow_body
    status: int = 500
    retry_after: str | None = None
    pages: set[int] | None = None
    times: int | None = None
    size: int = 20 * 1024 * 1024
    seconds: float = 30.0

    def applies(self, page: int) -> bool:
        if self.pages is not None and page not in self.pages:
            return False
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


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
    fault: Fault | None = None
    #: gzip bodies for clients that accept it; chunked bodies; close a keep-alive connection,
    #: unannounced, after this many requests (0: never).
    gzip: bool = False
    chunked: bool = False
    close_after: int = 0
    #: "all", "runs" (run-list pages served), status codes, "connections", "gzip".
    requests: Counter[str] = field(default_factory=Counter)
    #: Signatures received (newest last), so tests can check none of them is ever logged.
    signatures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._fragments: dict[tuple[int, str], bytes] = {}
        self._tz = ZoneInfo(self.zone)
        self._stop = threading.Event()
        self.set_runs(self.runs)

    def set_runs(self, runs: list[SimRun]) -> None:
        ordered = sorted(runs, key=lambda r: r.created)
        with self._lock:
            self.runs = ordered
            self._created = [r.created for r in ordered]

    def now(self) -> float:
        return time.time() + self.clock_offset

    def visible(self, now: float) -> list[SimRun]:
        """Runs that exist at `now`, newest first (how NSML lists them)."""
        with self._lock:
            end = bisect.bisect_right(self._created, now)
            return self.runs[end - 1 :: -1] if end else []

    def count(self, label: str) -> None:
        with self._lock:
            self.requests[label] += 1

    def take_fault(self, page: int) -> Fault | None:
        with self._lock:
            fault = self.fault
            return fault if fault is not None and fault.applies(page) else None

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
        stamp = headers.get("x-ncp-apigw-timestamp", "")
        access = headers.get("x-ncp-iam-access-key", "")
        given = headers.get("x-ncp-apigw-signature-v2", "")
        if not (stamp and access and given):
            return 401, "missing authentication headers"
        with self._lock:
            self.signatures = [*self.signatures[-99:], given]
        if not stamp.isdigit() or abs(int(stamp) - self.now() * 1000) > TIMESTAMP_WINDOW_MS:
            return 401, "timestamp is out of the allowed window (5 minutes)"
        if not hmac.compare_digest(access, self.access_key):
            return 401, "unknown access key"
        expected = signature(self.secret_key, method, uri, stamp, access)
        if not hmac.compare_digest(given, expected):
            return 401, "signature mismatch"
        if self.api_key is not None and not hmac.compare_digest(
            headers.get("x-ncp-apigw-api-key", ""), self.api_key
        ):
            return 401, "invalid API key"
        return None

    def run_list_bytes(self, page: int, size: int) -> bytes:
        """`run_list_page` serialized, from cached per-run JSON (a run's JSON changes only when
        its state does): the stand-in should cost next to nothing, so that benchmarks measure
        the exporter."""
        now = self.now()
        runs = self.visible(now)
        start = (page - self.first_page) * size
        parts = []
        for run in runs[start : start + size]:
            status, _ = run.state(now)
            key = (id(run), status)
            fragment = self._fragments.get(key)
            if fragment is None:
                fragment = json.dumps(self.render(run, now), ensure_ascii=False).encode()
                self._fragments[key] = fragment
            parts.append(fragment)
        return b'{"runList":[' + b",".join(parts) + b'],"totalCount":%d}' % len(runs)

    def run_list_page(self, page: int, size: int, fault: Fault | None) -> dict[str, Any]:
        now = self.now()
        runs = self.visible(now)
        total = len(runs)
        kind = fault.kind if fault else ""
        index = 0 if kind == "ignore_page" else page - self.first_page
        chosen = runs[index * size : (index + 1) * size]
        items = [self.render(r, now) for r in chosen]
        body: dict[str, Any] = {"runList": items, "totalCount": total}
        if kind == "forever" and runs and len(items) < size:
            phantom = self.render(runs[0], now)
            items += [
                {**phantom, "runName": f"phantom-{page}-{n}"} for n in range(size - len(items))
            ]
        elif kind == "total_high":
            body["totalCount"] = total + 3 * size
        elif kind == "total_low":
            body["totalCount"] = max(0, total - 2 * size)
        elif kind == "wrong_types":
            body["totalCount"] = "many"
            for item in items:
                item["createTime"] = 1725327501
        elif kind == "missing_fields":
            for item in items:
                del item["projectId"]
        return body


class _Handler(BaseHTTPRequestHandler):
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
        self.served = 0
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
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if sim.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if sim.chunked:  # uneven chunks, so that no chunk boundary falls where it is expected
            pieces = [body[i : i + 3001] for i in range(0, len(body), 3001)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
            body += b"0\r\n\r\n"
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on this page: nothing to tell
        self.served += 1
        if sim.close_after and self.served >= sim.close_after:
            self.close_connection = True  # as an idle timeout or a balancer would: no notice

    def _error(self, status: int, details: str, extra: dict[str, str] | None = None) -> None:
        code, message = ERRORS.get(status, (900, "Unexpected Error"))
        body = {"error": {"errorCode": code, "message": message, "details": details}}
        self._send(status, json.dumps(body).encode(), extra=extra)

    def do_POST(self) -> None:
        """Test control: `POST /_sim/fault` with a Fault as JSON (or `null` to clear)."""
        if self.path != "/_sim/fault":
            self._error(404, "no such control")
            return
        length = int(self.headers.get("Content-Length", "0"))
        spec = json.loads(self.rfile.read(length) or b"null")
        if spec is not None and spec.get("pages") is not None:
            spec["pages"] = set(spec["pages"])
        self.server.sim.fault = Fault(**spec) if spec else None
        self._send(200, b"{}")

    def do_GET(self) -> None:
        sim = self.server.sim
        parts = urlsplit(self.path)
        if parts.path == "/_sim/stats":
            with sim._lock:
                self._send(200, json.dumps(dict(sim.requests)).encode())
            return
        sim.count("all")
        denied = sim.authenticate("GET", self.path, self.headers)
        if denied is not None:
            sim.count(str(denied[0]))
            self._error(*denied)
            return
        if parts.path != RUNS_PATH:
            self._error(404, f"no resource at {parts.path}")
            return
        query = parse_qs(parts.query)
        try:
            page = int(query.get("page", ["1"])[0])
            size = int(query.get("pageSize", ["10"])[0])
        except ValueError:
            self._error(400, "page and pageSize must be integers")
            return
        if page < sim.first_page or size < 1:
            self._error(400, f"page must be >= {sim.first_page} and pageSize >= 1")
            return
        if sim.latency:
            time.sleep(sim.latency)
        fault = sim.take_fault(page)
        sim.count("runs")
        if fault is None:
            self._send(200, sim.run_list_bytes(page, size))
        elif not self._misbehave(fault, page):
            body = sim.run_list_page(page, size, fault)
            self._send(200, json.dumps(body, ensure_ascii=False).encode())

    def _misbehave(self, fault: Fault, page: int) -> bool:
        """Answer as the fault says; False when the fault only bends the page's content."""
        kind = fault.kind
        if kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
            self._error(fault.status, "simulated failure", extra)
        elif kind == "hang":
            self.server.stopping.wait(fault.seconds)
            self.close_connection = True
        elif kind == "html":
            self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif kind == "truncated":
            body = json.dumps(self.server.sim.run_list_page(page, 100, None)).encode()
            self._send(200, body[: len(body) // 2])
        elif kind == "oversized":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = b" " * 65536
            try:
                for _ in range(fault.size // len(chunk) + 1):
                    self.wfile.write(chunk)
            except OSError:
                pass
            self.close_connection = True
        elif kind == "gzip_bomb":  # 64 KiB on the wire, `size` bytes once decompressed
            body = gzip.compress(b" " * fault.size, compresslevel=9)
            self._send(200, body, extra={"Content-Encoding": "gzip"})
        elif kind == "reset":
            body = json.dumps(self.server.sim.run_list_page(page, 100, None)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            # RST rather than FIN: the client sees the connection torn down mid-body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif kind == "slow_body":
            body = json.dumps(self.server.sim.run_list_page(page, 100, None)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            step = max(1, len(body) // 100)
            try:
                for start in range(0, len(body), step):
                    if self.server.stopping.wait(fault.seconds / 100):
                        break
                    self.wfile.write(body[start : start + step])
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up at its deadline, as it should
            self.close_connection = True
        else:
            return False
        return True


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        sim: Simulator,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sim = sim
        self.stopping = threading.Event()
        super().__init__((host, port), _Handler)
        self._scheme = "http"
        if tls is not None:  # HTTPS, as the real gateway serves
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (as the exporter does at its deadline) is not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}{BASE_PATH}"

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="nsml-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


def demo_simulator(
    access_key: str, secret_key: str, runs: int = 240, seed: int = 7, port: int = 0
) -> SimulatorServer:
    """A lively population on loopback: about one new run a minute, for a day."""
    now = time.time()
    sim = Simulator(
        access_key, secret_key, generate_population(runs, now, seed=seed, future_rate=1 / 60)
    )
    return SimulatorServer(sim, port=port).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator", description="Serve a simulated NSML run list."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--runs", type=int, default=240, help="runs created before now")
    parser.add_argument("--new-runs-per-minute", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every page")
    parser.add_argument("--first-page", type=int, default=1, choices=(0, 1))
    parser.add_argument("--timezone", default="Asia/Seoul")
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--gzip", action="store_true", help="gzip bodies when the client accepts")
    parser.add_argument("--chunked", action="store_true", help="chunked transfer encoding")
    args = parser.parse_args(argv)
    now = time.time()
    population = generate_population(
        args.runs, now, seed=args.seed, future_rate=args.new_runs_per_minute / 60
    )
    sim = Simulator(
        args.access_key,
        args.secret_key,
        population,
        api_key=args.api_key,
        zone=args.timezone,
        first_page=args.first_page,
        latency=args.latency,
        gzip=args.gzip,
        chunked=args.chunked,
    )
    server = SimulatorServer(sim, args.host, args.port)
    print(server.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
