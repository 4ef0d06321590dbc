"""What a large `Accept` costs the exporter, without credentials (issue 22, item 4).

Starts `nsml-exporter --demo` from a tree (this one, or `--tree DIR` for another revision, e.g. a
`git worktree` of main before the fix), sends one request with N header lines of `Accept` of a
given size over a raw socket, and reports the status, the wall time and the exporter's CPU
seconds spent on it. Nothing asserts: it reports.

    python benchmarks/bench_hostile.py
    python benchmarks/bench_hostile.py --tree /tmp/old-main
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench_scrape import cpu_seconds, free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
#: (lines, bytes a line, what fills it): 20 x 64 KB as the issue verified, 98 x 65,000 as its probe.
CASES = (
    (20, 65_000, b"text/plain;q=0.5,"),
    (98, 65_000, b"text/plain;q=0.5,"),
    (98, 65_000, b","),
)


def send(port: int, lines: int, size: int, fill: bytes) -> tuple[str, float]:
    accept = b"Accept: " + fill * (size // len(fill)) + b"\r\n"
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + accept * lines + b"\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        with contextlib.suppress(OSError):  # refused before all was sent: the answer matters
            sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n" in answer:
                    break
        except OSError:
            pass
    status = answer.split(b"\r\n", 1)[0].decode("latin-1") or "(no status line)"
    return status, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(args.tree)}
    command = [sys.executable, "-m", "exporter", "--demo", "--listen-address", "127.0.0.1"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "error"],
        cwd=args.tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        print(f"\n{args.tree}\n\n| Accept | status | wall | exporter CPU |\n|---|---|---|---|")
        for lines, size, fill in CASES:
            before = cpu_seconds(proc.pid)
            status, wall = send(port, lines, size, fill)
            time.sleep(0.2)
            spent = cpu_seconds(proc.pid) - before
            what = f"{lines} lines of {size:,} bytes of {fill.decode()!r}"
            print(f"| {what} | {status} | {wall:.3f} s | {spent:.2f} s |")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
