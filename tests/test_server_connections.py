"""Connections over real sockets: handshakes and requests that never finish, the connection cap
under a flood of silent sockets, answers slower than a minute, slow readers, and SIGTERM with a
backlog or past its grace."""

from __future__ import annotations

import contextlib
import gzip
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.web.negotiation import Choice
from exporter.web.server import ExporterServer
from exporter.web.webconfig import WebConfig
from tests.fake_api import Fault, FaultyServer
from tests.helpers.process import (
    ExporterProcess,
    closed_by_server,
    exporter_args_for,
    exporter_env,
    rss_kib,
    start_exporter,
    status_lines,
)
from tests.helpers.runs import static_runs


def host_port(exporter: ExporterProcess) -> tuple[str, int]:
    host, port = exporter.url.split("://")[1].split(":")
    return host, int(port)


def fresh_get(exporter: ExporterProcess, path: str, timeout: float = 2) -> requests.Response:
    """A GET on a new connection, as a kubelet probe or a new scraper makes it (the exporter's
    session would reuse a connection admitted before the flood)."""
    return requests.get(
        exporter.url + path,
        timeout=timeout,
        verify=exporter.session.verify,
        cert=exporter.session.cert,
    )


def tls_exporter(
    tmp_path: Path, pki: dict[str, Path], simulator: FaultyServer, *extra: str
) -> ExporterProcess:
    config = tmp_path / "web.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": str(pki["server_crt"]),
                    "key_file": str(pki["server_key"]),
                }
            }
        )
    )
    return start_exporter(
        tmp_path,
        exporter_args_for(simulator, "--web-config-file", str(config), *extra),
        env=exporter_env(),
        scheme="https",
        verify=str(pki["ca"]),
    )


# -- handshakes and requests that never finish ---------------------------------------------------


@pytest.mark.process
def test_a_stalled_tls_handshake_is_cut_and_holds_no_slot(
    tmp_path: Path, pki: dict[str, Path], simulator: FaultyServer
) -> None:
    """Issue 16 (1): a socket that sent `\\x16` (or a whole ClientHello) and nothing more was
    never cut: 4 of them held MAX_CONNECTIONS=4 and every HTTPS client got 503."""
    simulator.sim.set_runs(static_runs(10))
    exporter = tls_exporter(
        tmp_path, pki, simulator, "--max-connections", "4", "--header-timeout", "2"
    )
    try:
        stalled = [socket.create_connection(host_port(exporter)) for _ in range(4)]
        for sock in stalled[:2]:
            sock.sendall(b"\x16")
        for sock in stalled[2:]:  # a whole ClientHello, then silence
            outgoing = ssl.MemoryBIO()
            hello = ssl.create_default_context().wrap_bio(
                ssl.MemoryBIO(), outgoing, server_hostname="127.0.0.1"
            )
            with pytest.raises(ssl.SSLWantReadError):
                hello.do_handshake()
            sock.sendall(outgoing.read())
        time.sleep(0.3)
        assert fresh_get(exporter, "/healthz").status_code == 200  # room was made at once
        assert all(closed_by_server(sock, within=4) for sock in stalled)
        assert fresh_get(exporter, "/healthz").status_code == 200
    finally:
        exporter.stop()


@pytest.mark.process
def test_a_tls_client_sending_a_garbage_record_logs_no_error(
    tmp_path: Path, pki: dict[str, Path], simulator: FaultyServer
) -> None:
    """Issue 17: `ssl.SSLError` dropped from what counts as a client gone would log ERROR."""
    simulator.sim.set_runs(static_runs(10))
    exporter = tls_exporter(tmp_path, pki, simulator)
    try:
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with socket.create_connection(host_port(exporter), timeout=5) as sock:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            sock.sendall(outgoing.read())
            sock.sendall(b"\x17\x03\x03\x00\x20" + b"x" * 32)  # application data, bad MAC
            assert closed_by_server(sock, within=5)
        assert exporter.get("/healthz").status_code == 200
        assert " ERROR " not in exporter.logs()
    finally:
        exporter.stop()


@pytest.mark.process
def test_silent_sockets_at_the_cap_do_not_shut_out_health_checks_or_scrapes(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 16 (10): 50 silent sockets at MAX_CONNECTIONS=50 gave everyone 503 for ~10 s, the
    liveness probe included. Now the connection idle longest makes room for a newcomer."""
    simulator.sim.set_runs(static_runs(10))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--max-connections", "50"), env=exporter_env()
    )
    silent = [socket.create_connection(host_port(exporter)) for _ in range(50)]
    try:
        time.sleep(0.3)
        for _ in range(20):
            assert fresh_get(exporter, "/healthz").status_code == 200
            silent.append(socket.create_connection(host_port(exporter)))  # the flood goes on
        assert fresh_get(exporter, "/metrics", timeout=10).status_code == 200
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.process
def test_max_connections_serves_exactly_that_many_requests_in_flight(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 17: a cap of `MAX_CONNECTIONS - 1` would refuse the third of three. With every
    connection in flight there is no idle one to close: a fourth gets 503."""
    simulator.sim.set_runs(static_runs(10))
    simulator.sim.latency = 1.5
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--max-connections", "3"), env=exporter_env()
    )
    time.sleep(2)  # the readiness scrape's collection is over
    statuses: list[int] = []
    scrapes = [
        threading.Thread(target=lambda: statuses.append(exporter.get(timeout=10).status_code))
        for _ in range(3)
    ]
    for thread in scrapes:
        thread.start()
    time.sleep(0.5)
    with socket.create_connection(host_port(exporter), timeout=5) as fourth:
        fourth.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert fourth.recv(100).startswith(b"HTTP/1.1 503")
    for thread in scrapes:
        thread.join(10)
    assert statuses == [200, 200, 200]


# -- answers that take long -----------------------------------------------------------------------


class SlowExposition:
    """An exposition that takes `seconds` to render (a slow collection)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def render(self, choice: Choice, gzipped: bool) -> list[bytes]:
        time.sleep(self.seconds)
        body = b"nsml_up 1.0\n"
        return [gzip.compress(body) if gzipped else body]


def test_the_answer_deadline_follows_collect_timeout() -> None:
    """Issue 16 (2): a fixed 60 s deadline cut, with no status line, a scrape that
    COLLECT_TIMEOUT allowed to take longer. Scaled down: collections may take 3 s, a client
    has 1 s to take the answer, and a 2.5 s collection is answered."""
    server = ExporterServer(
        ("127.0.0.1", 0),
        SlowExposition(2.5),  # type: ignore[arg-type]
        WebConfig(),
        header_timeout=1,
        collect_timeout=3,
        answer_timeout=1,
    )
    server.serve_in_thread()
    try:
        response = requests.get(server.url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert response.text == "nsml_up 1.0\n"
    finally:
        server.stop(1)


@pytest.mark.parametrize("sent", [b"", b"\x16"], ids=["nothing", "a handshake's first byte"])
def test_silent_tls_clients_are_idle_at_the_cap_and_at_a_stop(
    pki: dict[str, Path], sent: bytes
) -> None:
    """Bug caught: a TLS connection waiting for its first byte (or for the rest of its
    handshake) watched as busy, not idle. At MAX_CONNECTIONS=2, two such clients then shut
    every HTTPS client out with 503 until HEADER_TIMEOUT, and a SIGTERM waited its whole grace
    for them and reported them cut. In-process: the server's own `stop`, which SIGTERM calls."""
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki["server_crt"], pki["server_key"])
    server = ExporterServer(
        ("127.0.0.1", 0),
        SlowExposition(0),  # type: ignore[arg-type]
        WebConfig(ssl_context=server_tls),
        max_connections=2,
        header_timeout=60,
    )
    server.serve_in_thread()
    address = (str(server.server_address[0]), int(server.server_address[1]))
    silent = [socket.create_connection(address) for _ in range(2)]
    try:
        for sock in silent:
            sock.sendall(sent)
        time.sleep(0.3)  # both accepted, and waiting
        response = requests.get(server.url + "/healthz", verify=str(pki["ca"]), timeout=10)
        assert response.status_code == 200  # one of them made room
        assert server.stop(5) == []  # the other is closed at once, not waited for
        assert all(closed_by_server(sock, within=5) for sock in silent)
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.process
def test_header_timeout_does_not_cut_a_slow_collection(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 17: an answer deadline of HEADER_TIMEOUT would cut a 2 s page at 1 s."""
    simulator.sim.set_runs(static_runs(10))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--header-timeout", "1", "--request-timeout", "4"),
        env=exporter_env(),
    )
    simulator.sim.latency = 2.0
    response = exporter.get(timeout=15)
    assert response.status_code == 200
    assert "nsml_up 1.0" in response.text


@pytest.mark.process
def test_a_failed_collection_is_not_served_for_cache_seconds(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 16 (6): with CACHE_SECONDS=30, `nsml_up 0` was served for 30 s after the API came
    back."""
    simulator.sim.set_runs(static_runs(10))
    simulator.sim.fault = Fault("status", status=503)
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--cache-seconds", "30", "--retries", "0"),
        env=exporter_env(),
    )
    assert "nsml_up 0.0" in exporter.get().text
    simulator.sim.fault = None
    assert "nsml_up 1.0" in exporter.get().text
    read = simulator.sim.requests["runs"]
    assert "nsml_up 1.0" in exporter.get().text  # and that success is cached
    assert simulator.sim.requests["runs"] == read


@pytest.mark.process
def test_slow_readers_share_one_rendered_body(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 16 (9): each scrape rendered its own copy of the body, so 20 clients that never
    read took RSS from 80 MB to 1.3 GB. Now the scrapes of one collection share one body."""
    simulator.sim.set_runs(static_runs(6000))
    exporter = exporter_factory(
        *exporter_args_for(
            simulator,
            "--run-series-statuses",
            "RUN_STATE_IN_PROGRESS,RUN_STATE_COMPLETED",
            "--max-run-series",
            "100000",
            "--min-interval",
            "3600",
            "--collect-timeout",
            "30",
        ),
        env=exporter_env(),
    )
    body = exporter.get(headers={"Accept-Encoding": "identity"}).content
    assert len(body) > 2_000_000
    baseline = rss_kib(exporter.proc.pid)
    readers = []
    for _ in range(20):
        sock = socket.create_connection(host_port(exporter))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        readers.append(sock)
    time.sleep(3)
    grown = rss_kib(exporter.proc.pid) - baseline
    for sock in readers:
        sock.close()
    # One copy per reader would be 20 bodies (the code before grew 63 for 20 readers); shared,
    # what grows is the readers' threads, a few MB whatever the body: under 5 bodies.
    assert grown < 5 * len(body) // 1024, (grown, len(body) // 1024)
    assert exporter.get().status_code == 200


# -- SIGTERM ------------------------------------------------------------------------------------


def ask_healthz(address: tuple[str, int], tls: ssl.SSLContext | None) -> bytes:
    """`GET /healthz` on a new connection (over TLS with `tls`), read until it closes."""
    answer = b""
    try:
        sock = socket.create_connection(address, timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:  # a reset, or a TLS connection cut: whatever came before counts
        pass
    return answer


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_connections_in_the_backlog_at_stop_get_a_status_line(
    scheme: str, pki: dict[str, Path]
) -> None:
    """Issue 16 (11): connections queued but not yet accepted at SIGTERM were reset. Over TLS
    too, they get their handshake and a 503."""
    server_tls = client_tls = None
    if scheme == "https":
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(pki["server_crt"], pki["server_key"])
        client_tls = ssl.create_default_context(cafile=str(pki["ca"]))
    server = ExporterServer(
        ("127.0.0.1", 0),
        SlowExposition(0),  # type: ignore[arg-type]
        WebConfig(ssl_context=server_tls),
    )
    gate = threading.Event()
    original = server.process_request

    def held(request: Any, client_address: Any) -> None:
        gate.wait(10)  # the accept loop is busy: later connections wait in the backlog
        original(request, client_address)

    server.process_request = held  # type: ignore[method-assign]
    server.serve_in_thread()
    address = (str(server.server_address[0]), int(server.server_address[1]))
    answers: list[bytes] = []
    clients = [
        threading.Thread(target=lambda: answers.append(ask_healthz(address, client_tls)))
        for _ in range(6)
    ]
    for client in clients:
        client.start()
    time.sleep(0.3)
    stopper = threading.Thread(target=server.stop, args=(2,))
    stopper.start()
    time.sleep(0.3)
    gate.set()
    stopper.join(10)
    for client in clients:
        client.join(10)
    assert len(answers) == 6
    for answer in answers:
        assert len(status_lines(answer)) == 1, answer
    assert sum(b"503 Service Unavailable" in answer for answer in answers) >= 4


@pytest.mark.process
def test_a_stop_past_its_grace_names_the_requests_it_cut(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 16 (11): a SIGTERM whose grace ran out exited 0 with scrapes cut, silently."""
    simulator.sim.set_runs(static_runs(10))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--shutdown-grace", "1", "--collect-timeout", "20"),
        env=exporter_env(),
    )
    simulator.sim.latency = 4
    scrape = threading.Thread(target=_quietly, args=(exporter,))
    scrape.start()
    time.sleep(1)
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(10) == 0
    scrape.join(10)
    logs = exporter.logs()
    assert "cut 1 request(s) still in flight after SHUTDOWN_GRACE (1s)" in logs
    assert "GET '/metrics'" in logs


def _quietly(exporter: ExporterProcess) -> None:
    with contextlib.suppress(requests.RequestException):
        exporter.get(timeout=10)


# -- the server in-process: its threads, deadlines and stop ------------------------------------


class Held:
    """An exposition whose render waits until `release` is set: a request in flight."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rendering = threading.Event()

    def render(self, choice: Choice, gzipped: bool) -> list[bytes]:
        self.rendering.set()
        self.release.wait(30)
        return [b"nsml_up 1.0\n"]


def in_flight(server: ExporterServer) -> socket.socket:
    """A connection whose `/metrics` request is being answered (its render held)."""
    sock = socket.create_connection(server.server_address[:2], timeout=10)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_the_servers_threads_are_named_daemons() -> None:
    """Bugs caught: a thread without its name (a py-spy dump or a hang report reads "Thread-7"),
    or not a daemon (the process would outlive `main()`)."""
    server = ExporterServer(("127.0.0.1", 0), Held(), WebConfig())  # type: ignore[arg-type]
    thread = server.serve_in_thread()
    try:
        daemons = {t.name: t.daemon for t in threading.enumerate()}
        assert thread.name == "http"
        assert daemons["http"] is True
        assert daemons["http-watchdog"] is True
    finally:
        server.stop(0)


def test_the_servers_defaults_are_the_settings_defaults() -> None:
    """Bug caught: a default that differs from the setting's (a server built without the
    settings, as tests and embedders do, would behave unlike the exporter)."""
    from exporter.settings import Settings

    server = ExporterServer(("127.0.0.1", 0), Held(), WebConfig())  # type: ignore[arg-type]
    server.serve_in_thread()  # `stop` waits for the serving loop to end
    try:
        fields = Settings.model_fields
        assert server.header_timeout == fields["header_timeout"].default
        assert server.response_timeout == fields["collect_timeout"].default + 60
        assert server._max_connections == fields["max_connections"].default
    finally:
        server.stop(0)


def test_an_ipv6_address_is_served() -> None:
    """Bug caught: an IPv6 listen address (`::`, `::1`) bound as IPv4 (a start-up error)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    server = ExporterServer(("::1", 0), Held(), WebConfig())  # type: ignore[arg-type]
    server.serve_in_thread()
    try:
        assert server.url.startswith("http://[::1]:")
        assert requests.get(f"{server.url}/healthz", timeout=10).text == "ok\n"
    finally:
        server.stop(0)


def test_a_silent_connection_is_cut_at_the_header_timeout_and_a_kept_one_is_not() -> None:
    """Bugs caught: the watchdog never looking at deadlines (a silent socket holds a slot for
    ever), or cutting every idle connection while not stopping (a keep-alive scraper's
    connection closed between its scrapes)."""
    server = ExporterServer(("127.0.0.1", 0), Held(), WebConfig(), header_timeout=0.5)  # type: ignore[arg-type]
    server.serve_in_thread()
    try:
        with socket.create_connection(server.server_address[:2], timeout=20) as silent:
            assert silent.recv(1) == b""  # cut, well before the 20 s the read would wait
        with socket.create_connection(server.server_address[:2], timeout=20) as kept:
            probe = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(2):
                kept.sendall(probe)
                answer = b""
                while not answer.endswith(b"\r\n\r\nok\n"):
                    piece = kept.recv(4096)
                    assert piece, f"closed after {answer!r}"
                    answer += piece
                time.sleep(0.3)  # more than one watchdog pass, less than the header timeout
    finally:
        server.stop(0)


def test_a_stop_waits_for_answers_in_flight_within_its_grace() -> None:
    """Bugs caught: a stop that does not wait (or waits only when hurried), the grace counted
    backwards, the requests it cut named from the idle connections instead."""
    exposition = Held()
    server = ExporterServer(("127.0.0.1", 0), exposition, WebConfig())  # type: ignore[arg-type]
    server.serve_in_thread()
    with in_flight(server) as sock:
        assert exposition.rendering.wait(10)
        # Released after `stop` has stopped serving (its loop polls every 0.5 s): in flight then.
        threading.Timer(1.5, exposition.release.set).start()
        assert server.stop(30) == []  # it waited for the answer
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_a_stop_past_its_grace_returns_what_it_cut() -> None:
    exposition = Held()
    server = ExporterServer(("127.0.0.1", 0), exposition, WebConfig())  # type: ignore[arg-type]
    server.serve_in_thread()
    idle = socket.create_connection(server.server_address[:2], timeout=10)
    try:
        with in_flight(server):
            assert exposition.rendering.wait(10)
            assert server.stop(0.2) == ["127.0.0.1 GET '/metrics'"]
    finally:
        exposition.release.set()
        idle.close()


def test_a_hurried_stop_does_not_wait() -> None:
    """Bug caught: a second SIGTERM (`hurry`) not ending the wait for answers in flight."""
    exposition = Held()
    server = ExporterServer(("127.0.0.1", 0), exposition, WebConfig())  # type: ignore[arg-type]
    server.serve_in_thread()
    try:
        with in_flight(server):
            assert exposition.rendering.wait(10)
            server.hurry.set()
            assert server.stop(30) == ["127.0.0.1 GET '/metrics'"]  # at once, not in 30 s
    finally:
        exposition.release.set()


def test_request_errors_are_one_line_and_a_client_gone_is_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bugs caught: a client that hung up logged as the exporter's error, or a real error
    logged at debug (or with a traceback)."""
    server = ExporterServer(("127.0.0.1", 0), Held(), WebConfig())  # type: ignore[arg-type]
    server.serve_in_thread()
    caplog.set_level("DEBUG", logger="exporter.web.server")
    try:
        for error in (ConnectionResetError(104, "reset"), ValueError("a bug")):
            try:
                raise error
            except (ConnectionResetError, ValueError):
                server.handle_error(None, ("10.0.0.9", 5000))
    finally:
        server.stop(0)
    said = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert said == [
        ("DEBUG", "connection from 10.0.0.9 ended: [Errno 104] reset", None),
        ("ERROR", "request from 10.0.0.9 failed: ValueError('a bug')", None),
    ]


def test_cutting_a_closed_connection_is_no_error() -> None:
    """Bug caught: the watchdog dying on a connection its thread closed first."""
    from exporter.web.server import _cut

    sock = socket.socket()
    sock.close()
    _cut(sock)


def test_a_canned_answer_is_whole_http() -> None:
    """Bugs caught: a canned answer (at the cap, at a stop, plain HTTP to TLS) framed wrong:
    its length, or `Connection: close` (what a client reads before the server closes)."""
    from exporter.web import server

    assert server._canned("503 Service Unavailable", b"bye\n") == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 4\r\nConnection: close\r\n\r\nbye\n"
    )
    assert server.BUSY.endswith(b"\r\n\r\ntoo many connections, bye\n")  # the words at the cap
