"""The wiring (`exporter.__main__`) in-process: `main()` as the command runs it, in this
process, against the in-thread simulator. The same paths as a process are in test_integration
and test_server; here mutation testing can see which code each test reaches."""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import prometheus_client.metrics
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import exporter.__main__ as entry
from exporter.web.server import ExporterServer
from tests.fake_api import FaultyServer
from tests.helpers.settings import ACCESS, SECRET

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """`main()` sets what a process owns: the root logger, signal handlers, a frozen GC, no
    `_created` series. Each test gets them back as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    yield
    root.handlers[:], root.level = handlers, level
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    gc.unfreeze()
    prometheus_client.metrics.enable_created_metrics()  # type: ignore[no-untyped-call]


def keys(simulator: FaultyServer) -> list[str]:
    return ["--base-url", simulator.base_url, "--access-key", ACCESS, "--secret-key", SECRET]


def said(err: str, logger: str = "exporter") -> list[str]:
    """The messages `logger` wrote to stderr (`--log-format json`), whole."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line["msg"] for line in lines if line["logger"] == logger]


JSON = ["--log-format", "json"]


def test_once_prints_the_exposition_and_exits_0(
    simulator: FaultyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Bugs caught: `--once` printing nothing, or an exposition other than what `/metrics`
    answers `Accept: */*` (the text format, not gzipped); exit 1 for a good read; the
    exporter's own families (process, platform, requests) or `_created` series missing or
    extra."""
    assert entry.main(["--once", *keys(simulator)]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert "nsml_up 1.0\n" in out
    assert 'nsml_project_info{project="sandbox"' in out  # the details were read first
    assert "process_cpu_seconds_total " in out  # ProcessCollector
    assert "python_info{" in out  # PlatformCollector
    assert 'nsml_api_requests_total{code="200",endpoint="runs"} 1.0' in out  # ExporterMetrics
    assert re.search(r"^\w+_created[{ ]", out, re.MULTILINE) is None
    names = {family.name for family in text_string_to_metric_families(out)}  # parses whole
    assert {"nsml_up", "process_cpu_seconds", "python_info"} <= names


def test_once_exits_1_when_the_read_fails(
    simulator: FaultyServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Bug caught: `--once` exiting 0 after a failed read (a cron job would never notice)."""
    argv = ["--once", *keys(simulator)[:3], "wrong", "--secret-key", SECRET]
    assert entry.main(argv) == 1
    assert "nsml_up 0.0\n" in capsysbinary.readouterr().out.decode()


def test_demo_once_reads_the_simulators_runs(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bugs caught: `--demo` without keys refused, its keys or URL not handed to the client (or
    an `API_KEY` of the environment kept), `--demo-runs`, `--demo-latency` or `--demo-order`
    not reaching the simulator, the simulator left running or not said; `--details false`
    still reading details."""
    made: list[dict[str, Any]] = []
    stopped: list[object] = []
    simulator, stop = entry.demo_simulator, entry.SimulatorServer.stop

    def recorded(*args: Any, **kwargs: Any) -> Any:
        made.append({"runs": args[2], **kwargs})
        return simulator(*args, **kwargs)

    def recorded_stop(server: Any) -> None:
        stopped.append(server)
        stop(server)

    clients: list[Any] = []
    client = entry.NsmlClient

    def recorded_client(settings: Any, *args: Any) -> Any:
        clients.append(settings)
        return client(settings, *args)

    monkeypatch.setattr(entry, "demo_simulator", recorded)
    monkeypatch.setattr(entry.SimulatorServer, "stop", recorded_stop)
    monkeypatch.setattr(entry, "NsmlClient", recorded_client)
    monkeypatch.setenv("NSML_EXPORTER_API_KEY", "a-gateway-key")
    argv = ["--demo", "--once", "--demo-runs", "7", "--demo-latency", "0.01"]
    assert entry.main([*argv, "--demo-order", "arbitrary", "--details", "false", *JSON]) == 0
    captured = capsysbinary.readouterr()
    out = captured.out.decode()
    assert "nsml_api_reported_runs 7.0\n" in out
    assert "nsml_run_list_newest_first 0.0\n" in out  # the arbitrary order, found out
    assert "nsml_project_info" not in out
    assert made == [{"runs": 7, "latency": 0.01, "order": "arbitrary"}]
    assert len(stopped) == 1
    (settings,) = clients
    assert settings.api_key is None
    assert said(captured.err.decode())[0] == f"demo: NSML simulator at {settings.base_url}"


def test_a_bad_setting_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Bug caught: a `ConfigError` from the command line or the web-config file escaping as a
    traceback, or said without the program's name."""
    assert entry.main(["--page-size", "0", "--access-key", "a", "--secret-key", "s"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsml-exporter: invalid setting NSML_EXPORTER_PAGE_SIZE (--page-size)")
    assert err.count("\n") == 1
    assert entry.main(["--web-config-file", "/no/such.yml", "--demo"]) == 2
    assert "NSML_EXPORTER_WEB_CONFIG_FILE" in capsys.readouterr().err


def test_warnings_are_logged_as_the_exporter_starts(
    simulator: FaultyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bugs caught: the settings' warnings not logged, or logged before logging is set up
    (lost), or in another format than `LOG_FORMAT` asks for."""
    argv = ["--once", *keys(simulator), "--request-timeout", "30", *JSON]
    entry.main(argv)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    warned = [line for line in lines if "NSML_EXPORTER_REQUEST_TIMEOUT" in line["msg"]]
    assert [line["level"] for line in warned] == ["warning"]
    assert warned[0]["msg"].startswith("NSML_EXPORTER_REQUEST_TIMEOUT (--request-timeout) (30s)")


class Serving:
    """`main()` serving in this (the main) thread: `scrape` waits for its server, `signal`
    sends this process a signal, as a container runtime or Ctrl-C would."""

    def __init__(self) -> None:
        self.servers: list[ExporterServer] = []
        self.ready = threading.Event()

    def server(self) -> ExporterServer:
        assert self.ready.wait(30), "the exporter did not start serving"
        return self.servers[0]

    def get(self, path: str = "/metrics") -> requests.Response:
        return requests.get(f"{self.server().url}{path}", timeout=30)


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch) -> Serving:
    seen = Serving()

    class Recorded(ExporterServer):
        def serve_in_thread(self) -> threading.Thread:
            thread = super().serve_in_thread()
            seen.servers.append(self)
            seen.ready.set()
            return thread

    monkeypatch.setattr(entry, "ExporterServer", Recorded)
    return seen


class Background(threading.Thread):
    """`work` on a thread beside `main()`: its failure, if any, ends `main()` (SIGTERM) rather
    than leave it serving for ever, and is kept for the test (`failures()` waits for the work
    to end, so that what it noted is all there)."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._work = work
        self._failures: list[BaseException] = []

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # reported by the test
            self._failures.append(error)
            os.kill(os.getpid(), signal.SIGTERM)

    def failures(self) -> list[BaseException]:
        self.join(30)
        assert not self.is_alive(), "the background work did not end"
        return self._failures


def in_background(work: Callable[[], None]) -> Background:
    """Run `work` on a thread while the test's main thread runs `main()`."""
    background = Background(work)
    background.start()
    return background


def test_serving_answers_until_sigterm_then_exits_0(
    simulator: FaultyServer, serving: Serving, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bugs caught: the server not started, or started on another address or port; reading
    not started; SIGTERM not handled (the default action would kill the test run) or not
    ending the wait; the stop not logged; a non-zero exit for an asked-for stop."""
    scraped: list[str] = []

    def scrape_then_stop() -> None:
        scraped.append(serving.get().text)
        server = serving.server()
        assert server.server_address[0] == "127.0.0.1"
        assert (server.header_timeout, server.response_timeout) == (7, 5 + 60)
        assert server._max_connections == 3
        os.kill(os.getpid(), signal.SIGTERM)

    background = in_background(scrape_then_stop)
    argv = [*keys(simulator), "--listen-address", "127.0.0.1", "--port", "0", *JSON]
    limits = ["--header-timeout", "7", "--collect-timeout", "5", "--max-connections", "3"]
    assert entry.main([*argv, *limits]) == 0
    assert not background.failures()
    assert "nsml_up 1.0" in scraped[0]
    from exporter import __version__

    assert said(capsys.readouterr().err) == [
        f"nsml-exporter {__version__} serving {serving.server().url}/metrics "
        f"(NSML API {simulator.base_url})",
        "received SIGTERM, shutting down",
    ]


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2])
def test_reload_signals_are_logged_and_ignored(
    simulator: FaultyServer, serving: Serving, capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    """Bug caught: SIGHUP (what `kill -HUP` and many tools send to "reload") ending the
    process mid-scrape with nothing logged, as its default action does."""
    answers: list[int] = []

    def signal_then_scrape() -> None:
        serving.server()
        os.kill(os.getpid(), signum)
        answers.append(serving.get("/healthz").status_code)
        os.kill(os.getpid(), signal.SIGTERM)

    background = in_background(signal_then_scrape)
    argv = [*keys(simulator), "--listen-address", "127.0.0.1", "--port", "0", *JSON]
    assert entry.main(argv) == 0
    assert not background.failures()
    assert answers == [200]
    name = signal.Signals(signum).name
    ignored = f"received {name}: ignored (nothing to reload; SIGTERM stops)"
    assert said(capsys.readouterr().err)[1:] == [ignored, "received SIGTERM, shutting down"]


def test_a_second_sigint_stops_waiting_for_answers_in_flight(
    simulator: FaultyServer, serving: Serving, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bugs caught: a second Ctrl-C ignored (the exporter waits out `SHUTDOWN_GRACE` however
    often it is asked to stop), or the first one taken as the second; the answers cut not
    said."""
    hurried: list[bool] = []
    scrape = threading.Thread(target=serving.get, daemon=True)

    def interrupt_twice_while_a_scrape_waits() -> None:
        server = serving.server()
        simulator.sim.latency = 3.0  # every API request now takes 3 s: a scrape in flight
        scrape.start()
        while not any(not watched.idle for watched in list(server._watched.values())):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        hurried.append(server.hurry.wait(0.2))  # the first asks for a graceful stop only
        os.kill(os.getpid(), signal.SIGINT)
        hurried.append(server.hurry.wait(30))

    background = in_background(interrupt_twice_while_a_scrape_waits)
    argv = [*keys(simulator), "--listen-address", "127.0.0.1", "--port", "0", *JSON]
    assert entry.main([*argv, "--shutdown-grace", "60", "--collection-mode", "scrape"]) == 0
    assert not background.failures()
    assert hurried == [False, True]
    assert said(capsys.readouterr().err)[1:] == [
        "received SIGINT, shutting down",
        "received SIGINT again: not waiting for answers in flight",
        "cut 1 request(s) still in flight after SHUTDOWN_GRACE (60s): 127.0.0.1 GET '/metrics'",
    ]
    scrape.join(30)


def test_a_port_in_use_exits_2_naming_the_port(
    simulator: FaultyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug caught: a port another process holds ending in a traceback, or blamed on the
    listen address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [*keys(simulator), "--listen-address", "127.0.0.1", "--port", str(port)]
        assert entry.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"nsml-exporter: invalid setting NSML_EXPORTER_PORT (--port): cannot listen on "
        f"127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}"
    )


def test_an_address_not_of_this_machine_exits_2_naming_the_address(
    simulator: FaultyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug caught: an address that is none of this machine's blamed on the port."""
    argv = [*keys(simulator), "--listen-address", "192.0.2.1", "--port", "0"]
    assert entry.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "nsml-exporter: invalid setting NSML_EXPORTER_LISTEN_ADDRESS (--listen-address): "
        f"cannot listen on 192.0.2.1:0: {os.strerror(errno.EADDRNOTAVAIL)}"
    )


class Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_malloc_arenas_are_limited_to_two_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bugs caught: the limit not set (memory grows with every thread's arena), set to
    another value or parameter, or set over the user's own `MALLOC_ARENA_MAX`."""
    libc = Libc()
    monkeypatch.setattr(entry.ctypes, "CDLL", lambda name: libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    entry._limit_malloc_arenas()
    assert libc.calls == [(-8, 2)]  # M_ARENA_MAX
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    entry._limit_malloc_arenas()
    assert libc.calls == [(-8, 2)]


def test_malloc_arenas_are_left_alone_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug caught: a C library that is not glibc (Alpine's musl) failing the start."""
    libc = Libc()
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(entry.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(entry.os, "confstr", lambda name: None)
    entry._limit_malloc_arenas()
    assert libc.calls == []

    def missing(name: str) -> str:
        raise ValueError(name)

    monkeypatch.setattr(entry.os, "confstr", missing)
    entry._limit_malloc_arenas()  # returns, no error
    monkeypatch.setattr(entry.os, "confstr", lambda name: "glibc 2.36")

    def no_mallopt(name: object) -> object:
        raise AttributeError("mallopt")

    monkeypatch.setattr(entry.ctypes, "CDLL", no_mallopt)
    entry._limit_malloc_arenas()


def test_ctrl_c_before_serving_exits_130_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug caught: Ctrl-C during `--once` or start-up ending in a traceback, or with a code a
    shell does not read as "interrupted" (128 + SIGINT)."""

    def interrupted(argv: list[str] | None = None) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "main", interrupted)
    with pytest.raises(SystemExit) as exited:
        entry.run()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "nsml-exporter: interrupted\n"
    monkeypatch.setattr(entry, "main", lambda argv=None: 3)
    with pytest.raises(SystemExit) as exited:
        entry.run()
    assert exited.value.code == 3


def test_the_web_config_file_guards_what_is_served(
    simulator: FaultyServer, serving: Serving, tmp_path: Path
) -> None:
    """Bug caught: the web-config file read and checked, then not handed to the server: the
    exporter serves `/metrics` to anyone while its operator believes it asks for a password."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    statuses: list[int] = []

    def scrape_then_stop() -> None:
        statuses.append(serving.get().status_code)
        statuses.append(serving.get("/healthz").status_code)
        os.kill(os.getpid(), signal.SIGTERM)

    background = in_background(scrape_then_stop)
    argv = [*keys(simulator), "--listen-address", "127.0.0.1", "--port", "0"]
    assert entry.main([*argv, "--web-config-file", str(config)]) == 0
    assert not background.failures()
    assert statuses == [401, 200]
