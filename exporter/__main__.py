"""Wiring: settings -> logging -> (demo simulator) -> client -> collector -> HTTP server."""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import secrets
import signal
import sys
import threading
from argparse import Namespace
from collections.abc import Callable
from types import FrameType

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from pydantic import SecretStr

from . import __version__
from .cli import parse_args, settings_warnings
from .collection.collector import NsmlCollector
from .collection.details import RunDetails
from .demo import demo_simulator
from .demo.simulator import SimulatorServer
from .errors import ConfigError
from .logs import setup_logging
from .nsml.client import NsmlClient
from .selfmetrics import ExporterMetrics
from .settings import Settings, setting_label
from .web.exposition import Exposition
from .web.negotiation import PLAIN
from .web.server import ExporterServer
from .web.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


def _fail_config(error: ConfigError) -> int:
    print(f"nsml-exporter: {error}", file=sys.stderr)
    return 2


def _start_demo(settings: Settings, args: Namespace) -> tuple[Settings, SimulatorServer]:
    access, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    sim = demo_simulator(
        access, secret, args.demo_runs, latency=args.demo_latency, order=args.demo_order
    )
    log.info("demo: NSML simulator at %s", sim.base_url)
    settings = settings.model_copy(
        update={
            "access_key": SecretStr(access),
            "secret_key": SecretStr(secret),
            "api_key": None,
            "base_url": sim.base_url,
        }
    )
    return settings, sim


def _limit_malloc_arenas() -> None:
    """Two glibc malloc arenas, unless MALLOC_ARENA_MAX says otherwise.

    glibc gives new threads arenas of their own, and every connection and page fetch runs on a
    thread: memory freed in one arena is not reused by another (see docs/performance.md).
    """
    try:
        if "MALLOC_ARENA_MAX" in os.environ or not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (ValueError, OSError, AttributeError):  # not glibc: nothing to do
        return


def main(argv: list[str] | None = None) -> int:
    _limit_malloc_arenas()
    try:
        args, settings = parse_args(argv)
        web = load_web_config(settings.web_config_file)
    except ConfigError as error:
        return _fail_config(error)
    setup_logging(settings.log_level, settings.log_format)
    for warning in settings_warnings(settings):
        log.warning("%s", warning)
    sim = None
    if args.demo:
        settings, sim = _start_demo(settings, args)

    # No `_created` series beside the counters: nothing reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = ExporterMetrics()
    client = NsmlClient(settings, metrics.observe_request)
    details = RunDetails(client.api, settings) if settings.details else None
    collector = NsmlCollector(
        settings,
        client,
        metrics,
        details=details,
        once=args.once,  # one full read, however long, and the details first
    )
    live = CollectorRegistry()  # the exporter's own families, read fresh on every scrape
    metrics.register(live)
    ProcessCollector(registry=live)
    PlatformCollector(registry=live)
    exposition = Exposition(collector, live)

    try:
        if args.once:  # what /metrics answers `Accept: */*`
            sys.stdout.buffer.write(b"".join(exposition.render(PLAIN, gzipped=False)))
            sys.stdout.flush()
            last = collector.shared.last
            return 0 if last is not None and last.ok else 1
        return _serve(settings, exposition, web, collector.start)
    finally:
        collector.close()
        if details is not None:
            details.close()
        client.close()
        if sim is not None:
            sim.stop()


def _serve(
    settings: Settings, exposition: Exposition, web: WebConfig, start_reading: Callable[[], None]
) -> int:
    try:
        server = ExporterServer(
            (settings.listen_address, settings.port),
            exposition,
            web,
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
            collect_timeout=settings.collect_timeout,
        )
    except OSError as error:
        where = f"{settings.listen_address}:{settings.port}"
        # An address that is none of this machine's is the address's fault; anything else
        # (in use, a privileged port) the port's.
        blamed = "listen_address" if error.errno == errno.EADDRNOTAVAIL else "port"
        problem = f"cannot listen on {where}: {error.strerror or error}"
        return _fail_config(ConfigError.of({setting_label(blamed): problem}))
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():  # a second SIGTERM or SIGINT: stop waiting for answers in flight
            log.warning("received %s again: not waiting for answers in flight", name)
            server.hurry.set()
            return
        log.info("received %s, shutting down", name)
        stop.set()

    def _on_ignored(signum: int, frame: FrameType | None) -> None:
        log.info(
            "received %s: ignored (nothing to reload; SIGTERM stops)", signal.Signals(signum).name
        )

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # By default these end the process at once, mid-scrape, with nothing logged.
    for ignored in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(ignored, _on_ignored)
    # What is allocated so far lives as long as the process: keep the cyclic GC off it.
    gc.collect()
    gc.freeze()
    start_reading()  # now, not at the first scrape (and not before the port is ours)
    server.serve_in_thread()
    log.info(
        "nsml-exporter %s serving %s/metrics (NSML API %s)",
        __version__,
        server.url,
        settings.base_url,
    )
    # In slices: a signal that the kernel hands to another thread runs its handler only when
    # the main thread next runs Python code, and a wait with no timeout never returns for it.
    while not stop.wait(0.5):
        pass
    cut = server.stop(settings.shutdown_grace)
    if cut:
        # Still exit 0: the stop was asked for; the line says which answers it cut.
        log.warning(
            "cut %d request(s) still in flight after SHUTDOWN_GRACE (%gs): %s",
            len(cut),
            settings.shutdown_grace,
            "; ".join(cut),
        )
    return 0


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers (--once, start-up)
        print("nsml-exporter: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
