"""Long run histories: nsml-exporter against read-on-scrape (main before issue 21), in one run.

`python benchmarks/bench_scrape.py --history` runs this. For each history (10,000 runs at 50 ms a
request, 100,000 at 100 ms, 1,000,000 at 200 ms) it starts the simulator over HTTPS with pages
capped at 100 runs, newest first, 6 new runs a minute, and then each exporter with its defaults,
in turn, each against a fresh simulator. It scrapes every 10 s as Prometheus does (its headers,
a 10 s timeout) and records, per scrape: wall time, `nsml_up`, `nsml_view_age_seconds`, and
whether the runs served (the sum of `nsml_runs`) equal the runs the simulator lists. Then:

- when the first exact scrape came (seconds from the exporter's start);
- once there, scrape wall time (median and max), `nsml_up`, view age, and whether every scrape
  was exact (new runs included: they arrive while the exporter reads);
- run-list requests a minute in that steady state, the most requests in flight at once;
- the exporter's peak RSS.

Nothing asserts: it reports. The network floor of a full read is latency x pages / CONCURRENCY.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from bench_scrape import (
    ACCESS,
    PROMETHEUS_HEADERS,
    SECRET,
    Simulator,
    free_port,
    peak_rss_mb,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 10.0  # seconds between scrapes
LATENCY = {10_000: 0.05, 100_000: 0.1, 1_000_000: 0.2}
STEADY = 12  # scrapes recorded once the first exact one came
WARM_LIMIT = 1800.0  # seconds to wait for the first exact scrape
BASELINE_SCRAPES = 6


@dataclass
class Scrape:
    at: float
    wall: float
    up: bool
    age: float | None
    served: int
    listed: tuple[int, int]

    @property
    def exact(self) -> bool:
        return self.up and self.listed[0] <= self.served <= self.listed[1]


@dataclass
class Run:
    name: str
    scrapes: list[Scrape] = field(default_factory=list)
    first_exact: float | None = None
    requests_per_minute: float = 0.0
    in_flight_max: int = 0
    peak_rss_mb: float = 0.0


def served_runs(body: str) -> int:
    return int(sum(float(v) for v in re.findall(r"^nsml_runs\{[^}]*\} (\S+)", body, re.M)))


def gauge(body: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)", body, re.M)
    return float(found[1]) if found else None


def baseline_tree(rev: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nsml-baseline-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return folder


def exporter(tree: Path, port: int, sim: Simulator) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(sim.ca), "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1"]
    command += ["--port", str(port), "--base-url", sim.base_url, "--access-key", ACCESS]
    command += ["--secret-key", SECRET, "--log-level", "warning", "--details", "false"]
    return subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL)


def measure(name: str, tree: Path, runs: int, ours: bool) -> Run:
    latency = LATENCY.get(runs, 0.1)
    sim = Simulator.start(runs, latency, extra=("--max-page-size", "100"), new_per_minute=6)
    port = free_port()
    proc = exporter(tree, port, sim)
    result = Run(name)
    session = requests.Session()
    session.headers.update(PROMETHEUS_HEADERS)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        started = time.monotonic()
        steady_from: tuple[float, int] | None = None
        while True:
            tick = time.monotonic()
            before = sim.stats()["listed"]
            try:
                body = session.get(url, timeout=10).text
                wall = time.monotonic() - tick
            except requests.RequestException:
                body, wall = "", 10.0
            after = sim.stats()["listed"]
            scrape = Scrape(
                tick - started,
                wall,
                gauge(body, "nsml_up") == 1,
                gauge(body, "nsml_view_age_seconds"),
                served_runs(body),
                (before, after),
            )
            result.scrapes.append(scrape)
            if scrape.exact and result.first_exact is None:
                result.first_exact = scrape.at
                steady_from = (time.monotonic(), sim.stats()["runs"])
            enough = STEADY if ours else BASELINE_SCRAPES
            if result.first_exact is not None and len(steady(result)) >= enough:
                break
            if not ours and len(result.scrapes) >= BASELINE_SCRAPES:
                break
            if scrape.at > WARM_LIMIT:
                break
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))
        stats = sim.stats()
        since, counted = steady_from or (started, 0)  # the steady state, else the whole run
        minutes = (time.monotonic() - since) / 60
        result.requests_per_minute = (stats["runs"] - counted) / max(minutes, 1e-9)
        result.in_flight_max = stats.get("in_flight_max", 0)
        result.peak_rss_mb = peak_rss_mb(proc.pid)
        return result
    finally:
        proc.terminate()
        proc.wait(15)
        sim.stop()


def steady(run: Run) -> list[Scrape]:
    if run.first_exact is None:
        return []
    return [s for s in run.scrapes if s.at >= run.first_exact]


def row(runs: int, run: Run) -> str:
    calm = steady(run) or run.scrapes
    walls = [s.wall for s in calm]
    ages = [s.age for s in calm if s.age is not None]
    first = f"{run.first_exact:.0f} s" if run.first_exact is not None else "never"
    exact = f"{sum(s.exact for s in calm)}/{len(calm)}"
    up = f"{sum(s.up for s in calm)}/{len(calm)}"
    age = f"{statistics.median(ages):.0f} / {max(ages):.0f} s" if ages else "n/a"
    rate = f"{run.requests_per_minute:.0f}"
    return (
        f"| {runs:,} | {run.name} | {first} | {statistics.median(walls):.3f} / "
        f"{max(walls):.3f} s | {up} | {exact} | {age} | {rate} | {run.in_flight_max} | "
        f"{run.peak_rss_mb:.1f} MB |"
    )


def history(sizes: list[int], baseline_rev: str) -> list[dict[str, object]]:
    tree = baseline_tree(baseline_rev)
    figures: list[dict[str, object]] = []
    print(
        "\n| runs | exporter | first exact scrape | scrape median / max | nsml_up 1 | exact "
        "| view age median / max | list requests a minute | most in flight | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        for runs in sizes:
            pages = math.ceil(runs / 100)
            for name, where, ours in (
                ("nsml-exporter", ROOT, True),
                ("read-on-scrape", tree, False),
            ):
                run = measure(name, where, runs, ours)
                print(row(runs, run), flush=True)
                figures.append(
                    {"runs": runs, "pages": pages, "latency": LATENCY.get(runs), **run.__dict__}
                )
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
    for figure in figures:
        figure["scrapes"] = [scrape.__dict__ for scrape in figure["scrapes"]]  # type: ignore[attr-defined]
    return figures
