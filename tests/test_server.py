"""The HTTP side against hostile and careless clients, over real sockets.

Each test is one defect an adversarial probe found in the serving side: requests that got no
answer, log floods, user names leaking by timing, bcrypt starving real scrapes, slow clients
holding threads, a body smuggled behind a GET, SIGTERM cutting scrapes, and a flood of scrapes
spending the API quota.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from tests.fake_api import FaultyServer
from tests.helpers.process import (
    ExporterProcess,
    closed_by_server,
    exporter_args_for,
    exporter_env,
    raw,
    rss_kib,
    status_lines,
)
from tests.helpers.runs import static_runs

pytestmark = pytest.mark.process  # every test here starts the exporter or its CLI

PASSWORD = "s3cret pass"
OPENMETRICS = b"application/openmetrics-text"


@pytest.fixture
def served(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> ExporterProcess:
    simulator.sim.set_runs(static_runs(30))
    return exporter_factory(*exporter_args_for(simulator), env=exporter_env())


def with_auth(
    tmp_path: Path,
    simulator: FaultyServer,
    exporter_factory: Callable[..., ExporterProcess],
    rounds: int = 4,
    *extra: str,
) -> ExporterProcess:
    simulator.sim.set_runs(static_runs(30))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    config = tmp_path / "web.yml"
    config.write_text(yaml.safe_dump({"basic_auth_users": {"prom": hashed}}))
    return exporter_factory(
        *exporter_args_for(simulator, "--web-config-file", str(config), *extra),
        env=exporter_env(),
    )


def basic(user: bytes, password: bytes, scheme: bytes = b"Basic") -> bytes:
    return scheme + b" " + base64.b64encode(user + b":" + password)


# -- every request gets an answer ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain; version=x\r\n\r\n", 406),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Accept: application/openmetrics-text; version=abc\r\n\r\n",
            406,
        ),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Accept: application/openmetrics-text; version=9.9\r\n\r\n",
            406,
        ),
        (b"GET /\r\n\r\n", 200),  # HTTP/0.9: answered with a status line all the same
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS to the plain port
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431),
        (b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ],
)
def test_every_request_gets_a_status_line_and_serving_goes_on(
    served: ExporterProcess, request_bytes: bytes, status: int
) -> None:
    answer = raw(served, request_bytes)
    assert len(status_lines(answer)) == 1, answer[:400]  # one answer, nothing read past it
    assert status_lines(answer)[0].split(" ")[1] == str(status), answer[:200]
    assert b"version=9.9" not in answer and b"version=abc" not in answer  # nothing reflected
    assert served.get().status_code == 200
    assert "Traceback" not in served.logs()


def test_server_header_carries_no_versions(served: ExporterProcess) -> None:
    assert served.get("/healthz").headers["Server"] == "nsml-exporter"


def test_bad_credentials_get_401_never_a_dropped_connection(
    tmp_path: Path, simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    exporter = with_auth(tmp_path, simulator, exporter_factory)
    for header in (
        b"Basic \xff\xfe\xfd",  # not ASCII
        b"Basic " + base64.b64encode(b"prom:" + "p\u00e4ss".encode("latin-1")),  # not UTF-8
        basic(b"prom", b"x" * 100),  # longer than bcrypt takes
        b"Basic !!!!",
        b"Bearer abc",
    ):
        answer = raw(
            exporter, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + header + b"\r\n\r\n"
        )
        assert status_lines(answer)[0].startswith("HTTP/1.1 401"), (header, answer[:100])
    # The scheme is case-insensitive (RFC 7617).
    for scheme in (b"basic", b"BASIC", b"Basic"):
        answer = raw(
            exporter,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
            + basic(b"prom", PASSWORD.encode(), scheme)
            + b"\r\n\r\n",
        )
        assert status_lines(answer)[0].startswith("HTTP/1.1 200"), scheme
    assert "Traceback" not in exporter.logs()


def test_a_body_behind_a_get_is_refused_and_nothing_smuggled_is_answered(
    served: ExporterProcess,
) -> None:
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    for framing in (f"Content-Length: {len(smuggled)}", "Transfer-Encoding: chunked"):
        answer = raw(served, f"GET /healthz HTTP/1.1\r\n{framing}\r\n\r\n".encode() + smuggled)
        assert status_lines(answer) == ["HTTP/1.1 400 Bad Request"], answer
        assert b"Connection: close" in answer


# -- logs -----------------------------------------------------------------------------------


def test_client_aborts_write_no_traceback_and_json_stays_json(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.set_runs(static_runs(30))
    simulator.sim.latency = 0.2
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--log-format", "json", "--log-level", "debug"),
        env=exporter_env(),
    )
    host, port = exporter.url.removeprefix("http://").split(":")
    mark = len(exporter.logs())
    for n in range(100):
        with socket.create_connection((host, int(port))) as sock:
            if n % 2:  # half hang up mid-request, half before reading the answer
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            else:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert exporter.get().status_code == 200
    time.sleep(1)
    lines = exporter.logs()[mark:].splitlines()
    assert "Traceback" not in exporter.logs()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    about_aborts = [
        r for r in records if r["logger"].startswith("exporter.web.") and "HTTP/1.1" not in r["msg"]
    ]
    assert len(about_aborts) <= 100  # at most one line per failed request (access lines aside)
    assert not [r for r in records if r["level"] not in ("debug", "info")]


# -- basic auth under attack --------------------------------------------------------------------


def test_an_unknown_user_costs_what_a_known_one_does_at_any_cost(
    tmp_path: Path, simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    exporter = with_auth(tmp_path, simulator, exporter_factory, 12)

    def timed(user: str) -> float:
        started = time.perf_counter()
        assert exporter.get("/", auth=(user, "wrong")).status_code == 401
        return time.perf_counter() - started

    known = statistics.median(timed("prom") for _ in range(5))
    unknown = statistics.median(timed("nobody") for _ in range(5))
    assert 0.6 < unknown / known < 1.6, (known, unknown)


def test_wrong_passwords_do_not_starve_a_verified_scrape(
    tmp_path: Path, simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Bug caught: a verified scrape queued behind the bcrypt checks of wrong passwords (256
    clients guessing), so Prometheus times out while an attack lasts. Measured against this
    test's own baseline, one wrong password's check, so that a busy machine slows both."""
    exporter = with_auth(tmp_path, simulator, exporter_factory, 10)
    assert exporter.get(auth=("prom", PASSWORD)).status_code == 200  # verified once, remembered

    def seconds(password: str) -> float:
        started = time.monotonic()
        exporter.get("/", auth=("prom", password), timeout=10)
        return time.monotonic() - started

    one_check = statistics.median(seconds("guess") for _ in range(5))
    stop = threading.Event()
    refused: list[int] = []

    def attack() -> None:
        while not stop.is_set():
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(exporter.url + "/", auth=("prom", "guess"), timeout=10)
                refused.append(answer.status_code)

    attackers = [threading.Thread(target=attack) for _ in range(256)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(2)
        slowest = 0.0
        for _ in range(3):
            started = time.monotonic()
            assert exporter.get(auth=("prom", PASSWORD), timeout=10).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(15)
    # Queued behind the guesses, a scrape waits for dozens of checks; served, for a few.
    assert slowest < 8 * one_check, (slowest, one_check)
    assert set(refused) <= {401, 429} and 401 in refused


# -- slow clients and floods ------------------------------------------------------------------


def test_a_request_trickling_in_is_cut_at_the_header_deadline(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--header-timeout", "2"), env=exporter_env()
    )
    host, port = exporter.url.removeprefix("http://").split(":")
    """Bug caught: a deadline that each header line renews (an idle timeout) or none at all:
    the 20 lines, 10 s of them, all go through. Counted in lines sent, not seconds."""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        sent = 0
        try:
            for n in range(20):  # a header line every half second: never idle, never done
                sock.sendall(f"X-{n}: y\r\n".encode())
                sent += 1
                time.sleep(0.5)
        except OSError:
            pass
    assert sent < 20, "the request was never cut"


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def test_connections_are_capped_and_memory_returns_after_a_flood(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.set_runs(static_runs(30))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--max-connections", "50", "--header-timeout", "3"),
        env=exporter_env(),
    )
    host, port = exporter.url.removeprefix("http://").split(":")
    exporter.get()
    baseline = rss_kib(exporter.proc.pid)
    held = [socket.create_connection((host, int(port))) for _ in range(50)]
    time.sleep(0.3)
    # At the cap, a newcomer (on a connection of its own) gets room: the connection idle
    # longest is closed for it, at once, long before HEADER_TIMEOUT; the newest stays.
    assert requests.get(exporter.url + "/healthz", timeout=2).status_code == 200
    assert closed_by_server(held[0], within=1)
    assert not closed_by_server(held[-1], within=0.3)
    assert threads(exporter.proc.pid) <= 50 + 8  # one per connection, the cap holds
    for sock in held:
        sock.close()
    for _ in range(6):  # 3,000 connections in waves, each left idle until the deadline cuts it
        wave = [socket.create_connection((host, int(port))) for _ in range(500)]
        time.sleep(0.2)
        for sock in wave:
            sock.close()
    time.sleep(4)
    assert exporter.get().status_code == 200
    assert rss_kib(exporter.proc.pid) - baseline < 8 * 1024


def test_a_flood_of_scrapes_is_not_a_flood_of_api_requests(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.set_runs(static_runs(30))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--min-interval", "5"), env=exporter_env()
    )
    before = simulator.sim.requests["runs"]
    started = time.monotonic()
    texts = [exporter.get().text for _ in range(200)]
    elapsed = time.monotonic() - started
    assert all("nsml_up 1.0" in text for text in texts)
    assert simulator.sim.requests["runs"] - before <= 1 + int(elapsed / 5) + 1


# -- stopping -------------------------------------------------------------------------------------


def test_sigterm_lets_the_scrape_in_flight_finish_then_exits_0(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.set_runs(static_runs(30))
    exporter = exporter_factory(*exporter_args_for(simulator), env=exporter_env())
    simulator.sim.latency = 1.5  # the scrape below is still collecting when SIGTERM comes
    results: list[requests.Response] = []
    scrape = threading.Thread(target=lambda: results.append(exporter.get(timeout=10)))
    scrape.start()
    time.sleep(0.5)
    exporter.proc.send_signal(signal.SIGTERM)
    scrape.join(10)
    assert exporter.proc.wait(10) == 0
    assert results and results[0].status_code == 200
    assert "nsml_up 1.0" in results[0].text
    assert results[0].text.rstrip().endswith("1.0")  # whole, not cut short
    with pytest.raises(requests.ConnectionError):  # and nothing is accepted after
        requests.get(exporter.url + "/healthz", timeout=2)


def test_scrapes_whose_clients_vanished_do_not_hold_up_the_stop(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """A client that resets the connection while its answer is written ends that request: the
    stop does not wait the grace period for it."""
    simulator.sim.set_runs(static_runs(300))
    simulator.sim.latency = 0.3
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--shutdown-grace", "30"), env=exporter_env()
    )
    host, port = exporter.url.removeprefix("http://").split(":")
    for _ in range(5):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST: the answer, when it comes, meets a reset connection
    time.sleep(1.5)  # the collections finish and their answers fail to go out
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(20) == 0  # within the 30 s grace: nothing was waited for
    assert "Traceback" not in exporter.logs()
