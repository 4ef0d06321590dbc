"""The simulator made to misbehave, for tests only: faults, chunked bodies, dropped connections.

`FaultySimulator` is the package's simulator with a fault switchboard (`Fault`): an HTTP error
with or without `Retry-After`, a page that never answers, HTML, truncated JSON, wrong types,
missing fields, an oversized body, a gzip bomb, a connection reset mid-body, a body that trickles,
and paging that ignores `page`, never ends, or lies about `totalCount`. It can also answer in
chunked bodies and close keep-alive connections without notice, as balancers do.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.demo.simulator import Simulator, SimulatorHandler, SimulatorServer


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
    details: str = "simulated failure"  # the error body's `details`

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
class FaultySimulator(Simulator):
    fault: Fault | None = None
    #: Chunked bodies; close a keep-alive connection, unannounced, after this many answers.
    chunked: bool = False
    close_after: int = 0
    #: endpoint ("projects", "run", "nodes") -> the HTTP status it answers instead.
    resource_faults: dict[str, int] = field(default_factory=dict)
    #: Called with the page number before each run-list page is served: a test changes the
    #: list under the reader here (churn).
    on_page: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._fault_lock = threading.Lock()

    def take_fault(self, page: int) -> Fault | None:
        with self._fault_lock:
            fault = self.fault
            return fault if fault is not None and fault.applies(page) else None

    def run_list_page(self, page: int, size: int, fault: Fault | None) -> dict[str, Any]:
        """A page built from dicts, bent as `fault` says (the reference for the fast path)."""
        now = self.now()
        runs = self.visible(now)
        total = len(runs)
        kind = fault.kind if fault else ""
        index = 0 if kind == "ignore_page" else page - self.first_page
        items = [self.render(r, now) for r in runs[index * size : (index + 1) * size]]
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


class FaultyHandler(SimulatorHandler):
    server: FaultyServer

    def setup(self) -> None:
        super().setup()
        self.served = 0

    @property
    def sim(self) -> FaultySimulator:
        return self.server.sim

    def _write(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        if not self.sim.chunked:
            super()._write(status, body, content_type, headers)
        else:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            # Uneven chunks, so that no chunk boundary falls where it is expected.
            pieces = [body[i : i + 3001] for i in range(0, len(body), 3001)]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
            self.wfile.write(framed + b"0\r\n\r\n")
        self.served += 1
        if self.sim.close_after and self.served >= self.sim.close_after:
            self.close_connection = True  # as an idle timeout or a balancer would: no notice

    def answer_resource(self, path: str, page: int, size: int) -> None:
        endpoint = (
            "projects" if path == "/projects" else "nodes" if path.endswith("/nodes") else "run"
        )
        status = self.server.sim.resource_faults.get(endpoint)
        if status is None:
            super().answer_resource(path, page, size)
        else:
            self.server.sim.count(f"{endpoint}-fault")
            self._error(status, "simulated failure")

    def answer_page(self, page: int, size: int) -> None:
        if self.sim.on_page is not None:
            self.sim.on_page(page)
        fault = self.sim.take_fault(page)
        if fault is None:
            super().answer_page(page, size)
        elif not self._misbehave(fault, page):
            body = self.sim.run_list_page(page, size, fault)
            self._send(200, json.dumps(body, ensure_ascii=False).encode())

    def _raw_head(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if length is None:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _misbehave(self, fault: Fault, page: int) -> bool:
        """Answer as the fault says; False when the fault only bends the page's content."""
        kind = fault.kind
        whole = json.dumps(self.sim.run_list_page(page, 100, None)).encode()
        if kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
            self._error(fault.status, fault.details, extra)
        elif kind == "hang":
            self.server.stopping.wait(fault.seconds)
            self.close_connection = True
        elif kind == "html":
            self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif kind == "truncated":
            self._send(200, whole[: len(whole) // 2])
        elif kind == "oversized":
            self._raw_head(None)
            try:
                for _ in range(fault.size // 65536 + 1):
                    self.wfile.write(b" " * 65536)
            except OSError:
                pass
            self.close_connection = True
        elif kind == "gzip_bomb":  # 64 KiB on the wire, `size` bytes once decompressed
            body = gzip.compress(b" " * fault.size, compresslevel=9)
            self._send(200, body, extra={"Content-Encoding": "gzip"})
        elif kind == "reset":
            self._raw_head(len(whole))
            self.wfile.write(whole[: len(whole) // 3])
            self.wfile.flush()
            # RST rather than FIN: the client sees the connection torn down mid-body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif kind == "slow_body":
            self._raw_head(len(whole))
            step = max(1, len(whole) // 100)
            try:
                for start in range(0, len(whole), step):
                    if self.server.stopping.wait(fault.seconds / 100):
                        break
                    self.wfile.write(whole[start : start + step])
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up at its deadline, as it should
            self.close_connection = True
        else:
            return False
        return True


class FaultyServer(SimulatorServer):
    handler = FaultyHandler
    sim: FaultySimulator
