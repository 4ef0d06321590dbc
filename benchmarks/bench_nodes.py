"""What a node list that ignores `pageSize` costs the exporter's memory (issue 22, item 5).

A simulator whose node endpoint answers every run's nodes with 100,000 nodes (about 8 MB, under
MAX_RESPONSE_BYTES) whatever the page size; the exporter from a tree (this one, or `--tree DIR`)
scrapes it until its details refresh has read the node lists, and reports its peak and current
RSS. Nothing asserts: it reports.

    python benchmarks/bench_nodes.py [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from bench_scrape import ACCESS, SECRET, free_port, peak_rss_mb, wait_ready

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.demo.population import generate_population  # noqa: E402
from exporter.demo.simulator import Simulator, SimulatorHandler, SimulatorServer  # noqa: E402

NODE = {"nodeId": "n" * 24, "state": "RUNNING", "resourceType": "NVIDIA A100 80GB x8"}
BODY = json.dumps({"nodes": [NODE] * 100_000, "totalCount": 100_000}).encode()


class HugeNodes(SimulatorHandler):
    def answer_resource(self, path: str, page: int, size: int) -> None:
        if path.endswith("/nodes"):
            self.server.sim.count("nodes")
            self._send(200, BODY)
        else:
            super().answer_resource(path, page, size)


class Server(SimulatorServer):
    handler = HugeNodes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    sim = Simulator(ACCESS, SECRET, generate_population(300, time.time()))
    server = Server(sim).start()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(args.tree), "NSML_EXPORTER_SECRET_KEY": SECRET}
    command = [sys.executable, "-m", "exporter", "--listen-address", "127.0.0.1", "--port"]
    command += [str(port), "--base-url", server.base_url, "--access-key", ACCESS]
    command += ["--min-interval", "0", "--log-level", "error", "--detail-requests", "20"]
    proc = subprocess.Popen(command, cwd=args.tree, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        before = rss_mb(proc.pid)
        for _ in range(10):
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
            time.sleep(1.0)
        print(
            f"{args.tree}: node lists asked {sim.requests['nodes']}, RSS {before:.0f} MB before, "
            f"peak {peak_rss_mb(proc.pid):.0f} MB, now {rss_mb(proc.pid):.0f} MB"
        )
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()


if __name__ == "__main__":
    main()
