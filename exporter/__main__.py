"""Wiring: settings -> logging -> (demo simulator) -> client -> collector -> HTTP server."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import secrets
import signal
import sys
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from pydantic import SecretStr

from . import __version__
from .client import NsmlClient
from .collector import NsmlCollector, Stats
from .errors import ConfigError
from .exposition import TextEncoder
from .logs import setup_logging
from .server import ExporterServer
from .settings import Settings, parse_args, setting_label
from .simulator import SimulatorServer, demo_simulator
from .webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


def _fail_config(error: ConfigError) -> int:
    print(f"nsml-exporter: {error}", file=sys.stderr)
    return 2


def _start_demo(settings: Settings) -> tuple[Settings, SimulatorServer]:
    access, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    sim = demo_simulator(access, secret)
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

    glibc gives new threads arenas of their own, and the HTTP server runs each connection on a
    new thread: memory freed in one arena is not reused by another. Measured with four
    concurrent scrapes of 10,000 runs: peak RSS 57.8 MB with the default, 53.5 MB with two.
    """
    try:
        if "MALLOC_ARENA_MAX" in os.environ or not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (ValueError, OSError, AttributeError):  # not glibc: nothing to do
        return


def main(argv: list[str] | None = None) -> int:
    _limit_malloc_arenas()
    args, settings = parse_args(argv)
    setup_logging(settings.log_level, settings.log_format)
    try:
        web = load_web_config(settings.web_config_file)
    except ConfigError as error:
        return _fail_config(error)
    sim = None
    if args.demo:
        settings, sim = _start_demo(settings)

    stats = Stats()
    client = NsmlClient(settings, stats.observe_request)
    collector = NsmlCollector(settings, client.fetch_runs, stats)
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)

    try:
        if args.once:
            sys.stdout.write(TextEncoder()(registry).decode())
            last = collector.shared.last
            return 0 if last is not None and last.ok else 1
        return _serve(settings, registry, web, collector)
    finally:
        client.close()
        if sim is not None:
            sim.stop()


def _serve(
    settings: Settings, registry: CollectorRegistry, web: WebConfig, collector: NsmlCollector
) -> int:
    try:
        server = ExporterServer(
            (settings.listen_address, settings.port), registry, web, prepare=collector.pinned
        )
    except OSError as error:
        where = f"{settings.listen_address}:{settings.port}"
        return _fail_config(
            ConfigError(
                setting_label("port"), f"cannot listen on {where}: {error.strerror or error}"
            )
        )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # Everything allocated so far lives as long as the process: take it out of the cyclic GC's
    # way, and let a scrape's ~10^4 short-lived containers (which form no cycles) be freed by
    # reference counting before the GC looks at them (measured: -14 ms CPU per 10k-run scrape).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    server.serve_in_thread()
    log.info(
        "nsml-exporter %s serving %s/metrics (NSML API %s)",
        __version__,
        server.url,
        settings.base_url,
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
