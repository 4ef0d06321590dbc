"""Slow readers: memory and CPU when clients ask for /metrics and never read the answer.

30,000 runs with per-run series for every status (a 17 MB body), one collection served to every
scrape (`MIN_INTERVAL` 3600), then `--readers` clients that send `GET /metrics` and never read.
It reports the exporter's RSS before and after and the CPU those scrapes cost.

    python benchmarks/bench_slow_readers.py
    python benchmarks/bench_slow_readers.py --tree ../old-checkout --python ../old-venv/bin/python

`--tree` and `--python` measure another checkout (an older commit) the same way, for an A/B on
one machine. Nothing here asserts: it reports.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STATUSES = "RUN_STATE_IN_PROGRESS,RUN_STATE_COMPLETED,RUN_STATE_FAILED,RUN_STATE_STOPPED"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    assert match is not None
    return int(match[1]) // 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30_000)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they hold on")
    parser.add_argument("--python", default=sys.executable, help="the exporter's Python")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()

    sim = subprocess.Popen(
        [
            *(args.python, "-m", "exporter.demo", "--runs", str(args.runs)),
            *("--new-runs-per-minute", "0", "--access-key", "a", "--secret-key", "s"),
        ],
        cwd=args.tree,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    base_url = sim.stdout.readline().strip()
    port = free_port()
    exporter = subprocess.Popen(
        [
            *(args.python, "-m", "exporter", "--port", str(port), "--listen-address", "127.0.0.1"),
            *("--base-url", base_url, "--access-key", "a", "--secret-key", "s"),
            *("--run-series-statuses", STATUSES, "--max-run-series", "1000000"),
            *("--collect-timeout", "60", "--min-interval", "3600", "--log-level", "error"),
        ],
        cwd=args.tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        body = urllib.request.urlopen(url, timeout=120).read()  # the collection, once
        before, cpu_before = rss_mb(exporter.pid), cpu_seconds(exporter.pid)
        readers = []
        for _ in range(args.readers):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            readers.append(sock)
        time.sleep(args.seconds)
        after, cpu_after = rss_mb(exporter.pid), cpu_seconds(exporter.pid)
        print(
            f"{args.tree}: body {len(body) / 1e6:.1f} MB; RSS {before} MB -> {after} MB with "
            f"{args.readers} readers that never read; CPU for their scrapes "
            f"{cpu_after - cpu_before:.2f} s"
        )
        for sock in readers:
            sock.close()
    finally:
        exporter.kill()
        sim.kill()


if __name__ == "__main__":
    main()
