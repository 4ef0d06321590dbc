"""`python -m exporter.demo --help`: the simulated NSML API alone (the benchmark runs it so)."""

from __future__ import annotations

import argparse
import ssl
import sys
import threading
import time

from .churn import Churn, burst
from .population import generate_population
from .simulator import Simulator, SimulatorServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.demo",
        description="Serve a simulated NSML API (the run list, projects, run details and "
        "nodes), signed and paged like the real gateway, for trying the exporter and for "
        "its tests and benchmarks. It prints its base URL on the first line.",
    )
    serve = parser.add_argument_group("serving")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to serve on (default: %(default)s)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="PORT",
        help="0: any free port (default: %(default)s)",
    )
    serve.add_argument(
        "--access-key", required=True, metavar="KEY", help="the access key clients sign with"
    )
    serve.add_argument("--secret-key", required=True, metavar="KEY", help="its secret")
    serve.add_argument("--api-key", metavar="KEY", help="API Gateway key clients must send, if any")
    serve.add_argument("--gzip", action="store_true", help="gzip bodies when the client accepts")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="and this private key (PEM)")
    history = parser.add_argument_group("the run history")
    history.add_argument(
        "--runs",
        type=int,
        default=240,
        metavar="N",
        help="runs created before now (default: %(default)s)",
    )
    history.add_argument(
        "--span-hours",
        type=float,
        default=72.0,
        metavar="HOURS",
        help="over how many hours before now (default: %(default)s)",
    )
    history.add_argument(
        "--new-runs-per-minute",
        type=float,
        default=1.0,
        metavar="N",
        help="runs started as time passes (default: %(default)s)",
    )
    history.add_argument(
        "--seed",
        type=int,
        default=7,
        metavar="N",
        help="the same seed, the same history (default: %(default)s)",
    )
    history.add_argument(
        "--timezone",
        default="Asia/Seoul",
        metavar="ZONE",
        help="IANA zone of the times served (default: %(default)s)",
    )
    history.add_argument(
        "--no-forgotten",
        action="store_true",
        help="no notebook runs for ever: only runs created recently are in progress",
    )
    gateway = parser.add_argument_group("the gateway's behaviour")
    gateway.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds added to every request (default: %(default)s)",
    )
    gateway.add_argument(
        "--first-page",
        type=int,
        default=1,
        choices=(0, 1),
        help="the number of the first page (default: %(default)s)",
    )
    gateway.add_argument(
        "--order",
        choices=("newest", "arbitrary"),
        default="newest",
        help="the list's order (default: %(default)s)",
    )
    gateway.add_argument(
        "--max-page-size",
        type=int,
        metavar="N",
        help="serve at most this many items a page, as a gateway may (default: no cap)",
    )
    gateway.add_argument(
        "--refuse-large-pages",
        action="store_true",
        help="answer 400 to a larger pageSize instead of capping it silently",
    )
    activity = parser.add_argument_group("activity while it serves")
    activity.add_argument(
        "--churn-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="every this many seconds create a run, finish one and delete one (0: off)",
    )
    activity.add_argument(
        "--churn-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop the churn after this many seconds (0: never)",
    )
    activity.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="N",
        help="this many runs created close together, later (default: %(default)s)",
    )
    activity.add_argument(
        "--burst-in",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds from now until the burst (default: %(default)s)",
    )
    activity.add_argument(
        "--burst-over",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds the burst is spread over (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    now = time.time()
    population = generate_population(
        args.runs,
        now,
        seed=args.seed,
        span=args.span_hours * 3600,
        future_rate=args.new_runs_per_minute / 60,
        forgotten=not args.no_forgotten,
    )
    if args.burst:
        population += burst(args.burst, now + args.burst_in, args.burst_over)
    sim = Simulator(
        args.access_key,
        args.secret_key,
        population,
        api_key=args.api_key,
        zone=args.timezone,
        first_page=args.first_page,
        latency=args.latency,
        order=args.order,
        max_page_size=args.max_page_size,
        refuse_large_pages=args.refuse_large_pages,
        gzip=args.gzip,
    )
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = SimulatorServer(sim, args.host, args.port, tls)
    if args.churn_every > 0:
        churn = Churn(sim.listing, args.churn_every, sim.now).start()
        if args.churn_for > 0:
            threading.Timer(args.churn_for, churn.stop).start()
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
