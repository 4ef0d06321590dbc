"""The demo: a lively simulated NSML API on loopback that checks signatures like the real gateway.

`nsml-exporter --demo` starts it in-process; `python -m exporter.demo` serves it on its own.
"""

from __future__ import annotations

import time

from .population import generate_population
from .simulator import Simulator, SimulatorServer


def demo_simulator(
    access_key: str, secret_key: str, runs: int = 240, seed: int = 7, port: int = 0
) -> SimulatorServer:
    """A lively population on loopback: about one new run a minute, for a day."""
    now = time.time()
    sim = Simulator(
        access_key, secret_key, generate_population(runs, now, seed=seed, future_rate=1 / 60)
    )
    return SimulatorServer(sim, port=port).start()
