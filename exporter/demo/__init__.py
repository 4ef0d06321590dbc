"""The demo: a lively simulated NSML API on loopback that checks signatures like the real gateway.

`nsml-exporter --demo` starts it in-process; `python -m exporter.demo` serves it on its own.
"""

from __future__ import annotations

import time

from .population import generate_population
from .simulator import Simulator, SimulatorServer

#: Items a page holds at most, as a gateway may cap `pageSize` silently.
DEMO_PAGE_CAP = 100


def demo_simulator(
    access_key: str,
    secret_key: str,
    runs: int = 240,
    seed: int = 7,
    port: int = 0,
    *,
    latency: float = 0.0,
    order: str = "newest",
) -> SimulatorServer:
    """A lively population on loopback: about one new run a minute, for a day; pages of at most
    100 runs. A large history spans more days (about 100 runs a day per 240)."""
    now = time.time()
    span = 3 * 86400 * max(1.0, runs / 240 / 100)
    sim = Simulator(
        access_key,
        secret_key,
        generate_population(runs, now, seed=seed, span=span, future_rate=1 / 60),
        latency=latency,
        order=order,
        max_page_size=DEMO_PAGE_CAP,
    )
    return SimulatorServer(sim, port=port).start()
