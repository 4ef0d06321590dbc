"""Load: many scrapers at once, slow scrapers, and many scrapes in a row."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
import requests

from exporter.demo.simulator import SimulatorServer
from tests.helpers.process import ExporterProcess, exporter_args_for, exporter_env, rss_kib
from tests.helpers.runs import static_runs

pytestmark = pytest.mark.process  # every test here starts the exporter or its CLI


def test_fifty_concurrent_scrapes_cost_one_upstream_collection(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.set_runs(static_runs(120))
    simulator.sim.latency = 0.3  # three pages of 50: one collection takes about 0.6 s
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--page-size", "50"), env=exporter_env()
    )
    before = simulator.sim.requests["runs"]
    barrier = threading.Barrier(50)
    results: list[str] = []
    lock = threading.Lock()

    def scrape() -> None:
        barrier.wait()
        text = requests.get(exporter.url + "/metrics", timeout=30).text
        with lock:
            results.append(text)

    threads = [threading.Thread(target=scrape) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 50
    assert all("nsml_up 1.0" in text for text in results)
    assert simulator.sim.requests["runs"] - before == 3


def test_a_stalled_client_does_not_hold_up_other_scrapes(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Bug caught: connections served one at a time (a plain `HTTPServer`, or a lock around
    the handler): the scrape waits behind 20 stalled requests until HEADER_TIMEOUT cuts them,
    60 s here, and times out at 30 s. No wall-time bound: the wait would be the stall's."""
    simulator.sim.set_runs(static_runs(50))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--header-timeout", "60"), env=exporter_env()
    )
    host, port = exporter.url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(20):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never finishes the request
        stalled.append(sock)
    readers = []
    for _ in range(5):  # ask for metrics and never read the answer
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(sock)
    try:
        response = requests.get(exporter.url + "/metrics", timeout=30)
        assert response.status_code == 200 and "nsml_up 1.0" in response.text
        assert requests.get(exporter.url + "/healthz", timeout=5).text == "ok\n"
    finally:
        for sock in stalled + readers:
            sock.close()


def test_a_thousand_scrapes_leave_memory_flat(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.set_runs(static_runs(300))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--page-size", "100"), env=exporter_env()
    )
    session = requests.Session()
    for _ in range(200):  # warm up: caches, pools, allocator arenas
        assert session.get(exporter.url + "/metrics", timeout=10).status_code == 200
    warm = rss_kib(exporter.proc.pid)
    for _ in range(1000):
        response = session.get(exporter.url + "/metrics", timeout=10)
        assert response.status_code == 200
    grown = rss_kib(exporter.proc.pid) - warm
    assert "nsml_up 1.0" in response.text
    assert grown < 4096, f"RSS grew {grown} KiB over 1000 scrapes"
