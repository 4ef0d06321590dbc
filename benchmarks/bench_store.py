"""The store of runs (issue 26): nsml-exporter against main before it, in one run.

    python benchmarks/bench_store.py                          # every scenario (about an hour)
    python benchmarks/bench_store.py --only small,activity    # some of them
    python benchmarks/bench_store.py --json results.json

Each exporter runs in its own process against its own simulator (`python -m exporter.demo`, its
own process) over HTTPS, pages capped at 100 runs as a gateway may, newest first, and is scraped
with the headers Prometheus 3 sends. The exporters compared are this tree and git revisions
checked out in worktrees: `--before` (main before issue 26) and, for the small history,
`--before-21` (main before issue 21, which read on every scrape). Scenarios:

- **small**: 10,000 runs at 50 ms, read on scrape: exporter CPU and wall time per scrape,
  details off and on, against the network floor (latency x (1 + ceil((pages - 1) / 4))).
- **activity**: 100,000 runs at 100 ms; a run created, one finished and one deleted every 2 s
  from the simulator's start, for 4 minutes (warming) and `--minutes` more, then quiet: per
  scrape (every 10 s) its wall time, `nsml_up`, the runs served against the simulator's own
  count, runs in progress likewise, and failed collections; then how long after the activity
  stops until every count is exact.
- **burst**: 100,000 runs at 100 ms; 500 runs created within 30 s, 3 minutes in (during a full
  read, once warm): how long after the burst until the runs served are exact.
- **million**: 1,000,000 runs at 200 ms, about 200 in progress, with `STATE_FILE`: the first
  warming (at `READ_RATE` 50 to save time), then a restart at the defaults: how soon the restart
  serves `nsml_up 1`, then for `--minutes` the API requests a minute (all endpoints), peak RSS,
  and runs in progress served against the simulator's.

Nothing here asserts: it reports. The simulator's truth (`/_sim/truth`) is read right after each
scrape, so a change between the two shows as a difference of one.
"""

from __future__ import annotations

import argparse
import json
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
from bench_history import baseline_tree
from bench_scrape import (
    ACCESS,
    PROMETHEUS_HEADERS,
    SECRET,
    Simulator,
    cpu_seconds,
    floor,
    free_port,
    peak_rss_mb,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
IN_PROGRESS = "RUN_STATE_IN_PROGRESS"
INTERVAL = 10.0


def drop_worktree(folder: Path) -> None:
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(folder)],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )


def start_exporter(tree: Path, sim: Simulator, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(sim.ca), "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1"]
    command += ["--port", str(port), "--base-url", sim.base_url, "--access-key", ACCESS]
    command += ["--secret-key", SECRET, "--log-level", "warning", *extra]
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}/metrics"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def samples(body: str, name: str) -> list[tuple[str, float]]:
    return [
        (m[1] or "", float(m[2])) for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)", body, re.M)
    ]


def total(body: str, name: str, needle: str = "") -> float:
    return sum(value for labels, value in samples(body, name) if needle in labels)


def gauge(body: str, name: str) -> float | None:
    found = samples(body, name)
    return found[0][1] if found else None


@dataclass
class Scrape:
    at: float
    wall: float
    up: bool
    served: int
    in_progress: int
    listed: int
    listed_in_progress: int
    errors: float
    last_success: float


@dataclass
class Timeline:
    name: str
    scrapes: list[Scrape] = field(default_factory=list)

    def take(self, session: requests.Session, url: str, sim: Simulator, started: float) -> Scrape:
        tick = time.monotonic()
        try:
            body = session.get(url, timeout=10).text
        except requests.RequestException:
            body = ""
        wall = time.monotonic() - tick
        truth = sim_truth(sim)
        scrape = Scrape(
            at=tick - started,
            wall=wall,
            up=gauge(body, "nsml_up") == 1,
            served=int(total(body, "nsml_runs")),
            in_progress=int(total(body, "nsml_runs", f'status="{IN_PROGRESS}"')),
            listed=truth.get("listed", 0),
            listed_in_progress=truth.get(IN_PROGRESS, 0),
            errors=total(body, "nsml_collection_errors_total"),
            last_success=gauge(body, "nsml_last_success_timestamp_seconds") or 0.0,
        )
        self.scrapes.append(scrape)
        return scrape


def sim_truth(sim: Simulator) -> dict[str, int]:
    root = sim.base_url.split("/nsml/")[0]
    found: dict[str, int] = requests.get(
        root + "/_sim/truth", timeout=30, verify=str(sim.ca)
    ).json()
    return found


def exact(scrape: Scrape) -> bool:
    return (
        scrape.up
        and scrape.served == scrape.listed
        and scrape.in_progress == scrape.listed_in_progress
    )


def wait_up(session: requests.Session, url: str, limit: float) -> float | None:
    """Seconds until the first nsml_up 1, or None."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if gauge(session.get(url, timeout=10).text, "nsml_up") == 1:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(1.0)
    return None


def session() -> requests.Session:
    got = requests.Session()
    got.headers.update(PROMETHEUS_HEADERS)
    return got


# -- scenarios -----------------------------------------------------------------------------------


def small(trees: dict[str, Path], scrapes: int = 16, rounds: int = 3) -> dict[str, object]:
    """10,000 runs read on scrape: CPU and wall time per scrape. The exporters take turns,
    `rounds` times, so that a busy moment of the machine falls on all of them; CPU is the
    process's total over a round's scrapes divided by their number (the kernel counts CPU in
    10 ms ticks: one scrape's own figure is too coarse to compare)."""
    runs, latency = 10_000, 0.05
    net = floor(runs, latency)
    rows: dict[str, object] = {}
    print(f"\n### small: {runs:,} runs at {latency * 1000:.0f} ms, read on scrape\n")
    print(f"network floor {net:.3f} s; {rounds} rounds of {scrapes} scrapes each\n")
    print("| exporter | details | CPU per scrape (mean of rounds) | rounds | wall (median) |")
    print("|---|---|---|---|---|")
    for details in ("false", "true"):
        cpu: dict[str, list[float]] = {name: [] for name in trees}
        walls: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(rounds):
            for name, tree in trees.items():
                sim = Simulator.start(runs, latency, extra=("--max-page-size", "100"))
                try:
                    proc, url = start_exporter(
                        tree, sim, "--min-interval", "0", "--details", details
                    )
                    got = session()
                    for _ in range(2):  # the first scrapes (and, here, warm details)
                        got.get(url, timeout=30)
                    before = cpu_seconds(proc.pid)
                    for _ in range(scrapes):
                        tick = time.monotonic()
                        got.get(url, timeout=30)
                        walls[name].append(time.monotonic() - tick)
                        if details == "true":
                            time.sleep(0.5)  # the details refresh after it, off the scrape's path
                    cpu[name].append((cpu_seconds(proc.pid) - before) / scrapes)
                    stop(proc)
                finally:
                    sim.stop()
        for name in trees:
            wall = statistics.median(walls[name])
            row = {
                "cpu": statistics.mean(cpu[name]),
                "rounds": cpu[name],
                "wall": wall,
                "floor": net,
            }
            rows[f"{name} details={details}"] = row
            each = ", ".join(f"{value:.3f}" for value in cpu[name])
            print(
                f"| {name} | {details} | {row['cpu']:.3f} s | {each} | {wall:.3f} s "
                f"({wall / net:.2f}x) |",
                flush=True,
            )
    return rows


def activity(trees: dict[str, Path], minutes: float) -> dict[str, object]:
    """Runs created, finished and deleted every 2 s over a 100,000-run history."""
    runs, latency, lead = 100_000, 0.1, 240.0  # the churn begins with the simulator: warm first
    results: dict[str, object] = {}
    print(f"\n### activity: {runs:,} runs at 100 ms, a run created, finished, deleted every 2 s\n")
    print(
        "| exporter | warm | scrapes | max wall | nsml_up 1 | failed reads | max served - listed "
        "| max in progress off | in progress exact | exact after the activity stops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, tree in trees.items():
        churn = ("--churn-every", "2", "--churn-for", str(lead + minutes * 60))
        sim = Simulator.start(
            runs,
            latency,
            span_hours=24 * 365,
            extra=("--max-page-size", "100", "--no-forgotten", *churn),
        )
        launched = time.monotonic()
        stops = launched + lead + minutes * 60
        proc, url = start_exporter(tree, sim)
        got, line = session(), Timeline(name)
        settled = None
        try:
            warm = wait_up(got, url, lead)
            while time.monotonic() < stops:
                line.take(got, url, sim, launched)
                time.sleep(max(0.0, min(INTERVAL, stops - time.monotonic())))
            while time.monotonic() - stops < 900:
                tick = time.monotonic()
                scrape = line.take(got, url, sim, launched)
                if exact(scrape):
                    settled = time.monotonic() - stops
                    break
                time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))
        finally:
            stop(proc)
            sim.stop()
        during = [s for s in line.scrapes if s.at < stops - launched]
        ups = [s for s in during if s.up]
        row = {
            "warm": warm,
            "scrapes": len(during),
            "max_wall": max((s.wall for s in during), default=None),
            "up": len(ups),
            "failed_reads": during[-1].errors - during[0].errors if during else None,
            "max_total_off": max((abs(s.served - s.listed) for s in ups), default=None),
            "max_in_progress_off": max(
                (abs(s.in_progress - s.listed_in_progress) for s in ups), default=None
            ),
            "in_progress_exact": sum(s.in_progress == s.listed_in_progress for s in ups),
            "settled_after": settled,
            "scrape_log": [s.__dict__ for s in line.scrapes],
        }
        results[name] = row
        warmed = f"{warm:.0f} s" if warm is not None else f"over {lead:.0f} s"
        settle = f"{settled:.0f} s" if settled is not None else "not in 15 min"
        print(
            f"| {name} | {warmed} | {row['scrapes']} | {row['max_wall']} | "
            f"{row['up']}/{row['scrapes']} | {row['failed_reads']} | {row['max_total_off']} | "
            f"{row['max_in_progress_off']} | {row['in_progress_exact']}/{row['scrapes']} | "
            f"{settle} |",
            flush=True,
        )
    return results


def burst(trees: dict[str, Path]) -> dict[str, object]:
    """500 runs created within 30 s, 3 minutes in: during a full read once both exporters are
    warm (one reads 100,000 runs in about 3 minutes, paced; the other in about one)."""
    runs, latency, count, start, over = 100_000, 0.1, 500, 180.0, 30.0
    results: dict[str, object] = {}
    print(f"\n### burst: {count} runs created within {over:.0f} s, {start:.0f} s in\n")
    print("| exporter | exact after the burst ends | scrapes until then |")
    print("|---|---|---|")
    for name, tree in trees.items():
        extra = ("--max-page-size", "100", "--no-forgotten", "--burst", str(count))
        extra += ("--burst-in", str(start), "--burst-over", str(over))
        sim = Simulator.start(runs, latency, span_hours=24 * 365, extra=extra)
        launched = time.monotonic()
        proc, url = start_exporter(tree, sim)
        got, line = session(), Timeline(name)
        settled = None
        try:
            end = launched + start + over
            while time.monotonic() - end < 900:
                tick = time.monotonic()
                scrape = line.take(got, url, sim, launched)
                if time.monotonic() > end and exact(scrape):
                    settled = time.monotonic() - end
                    break
                time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))
        finally:
            stop(proc)
            sim.stop()
        results[name] = {"settled_after": settled, "scrapes": [s.__dict__ for s in line.scrapes]}
        settle = f"{settled:.0f} s" if settled is not None else "not in 15 min"
        print(f"| {name} | {settle} | {len(line.scrapes)} |", flush=True)
    return results


def million(minutes: float) -> dict[str, object]:
    """A million runs: warm, restart from STATE_FILE, then the steady state."""
    runs, latency = 1_000_000, 0.2
    state = Path(tempfile.mkdtemp(prefix="nsml-state-")) / "store.json.gz"
    sim = Simulator.start(
        runs, latency, span_hours=24 * 365 * 3, extra=("--max-page-size", "100", "--no-forgotten")
    )
    got = session()
    result: dict[str, object] = {}
    print(f"\n### million: {runs:,} runs at 200 ms, STATE_FILE\n")
    try:
        proc, url = start_exporter(ROOT, sim, "--state-file", str(state), "--read-rate", "50")
        result["warm"] = wait_up(got, url, 3600)
        result["warm_peak_rss_mb"] = peak_rss_mb(proc.pid)
        stop(proc)  # saves the store
        result["state_file_mb"] = state.stat().st_size / 1e6 if state.exists() else None
        proc, url = start_exporter(ROOT, sim, "--state-file", str(state))
        restarted = time.monotonic()
        result["restart_up_after"] = wait_up(got, url, 600)
        before = sim.stats()
        started, line = time.monotonic(), Timeline("nsml-exporter")
        while time.monotonic() - started < minutes * 60:
            tick = time.monotonic()
            line.take(got, url, sim, restarted)
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - tick)))
        after = sim.stats()
        spent = (time.monotonic() - started) / 60
        result["requests_per_minute"] = (after["all"] - before["all"]) / spent
        result["peak_rss_mb"] = peak_rss_mb(proc.pid)
        ups = [s for s in line.scrapes if s.up]
        result["in_progress_listed"] = statistics.median(s.listed_in_progress for s in line.scrapes)
        result["max_in_progress_off"] = max(
            (abs(s.in_progress - s.listed_in_progress) for s in ups), default=None
        )
        result["in_progress_exact"] = (
            f"{sum(s.in_progress == s.listed_in_progress for s in ups)}/{len(line.scrapes)}"
        )
        result["up"] = f"{len(ups)}/{len(line.scrapes)}"
        stop(proc)
    finally:
        sim.stop()
    for key, value in result.items():
        print(f"- {key}: {value}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="small,activity,burst,million")
    parser.add_argument("--before", default="cb551cd", help="main before issue 26")
    parser.add_argument("--before-21", default="3d165bc", help="main before issue 21")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--exporters",
        default="ours,before,before-21",
        help="which exporters to run (before-21 in the small history only)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    only, chosen = set(args.only.split(",")), set(args.exporters.split(","))
    before, before_21 = baseline_tree(args.before), baseline_tree(args.before_21)
    trees = {
        name: tree
        for key, name, tree in (
            ("ours", "nsml-exporter", ROOT),
            ("before", args.before, before),
            ("before-21", args.before_21, before_21),
        )
        if key in chosen
    }
    results: dict[str, object] = {}
    try:
        if "small" in only:
            results["small"] = small(trees)
        trees.pop(args.before_21, None)
        if "activity" in only:
            results["activity"] = activity(trees, args.minutes)
        if "burst" in only:
            results["burst"] = burst(trees)
        if "million" in only:
            results["million"] = million(args.minutes)
    finally:
        drop_worktree(before)
        drop_worktree(before_21)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
