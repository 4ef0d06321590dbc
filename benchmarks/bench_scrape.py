"""Scrape benchmark: nsml-exporter against a naive baseline and the network floor, in one run.

Starts the NSML simulator (its own process) over HTTPS, as the real API is served, with a
certificate made in the run and trusted through REQUESTS_CA_BUNDLE, with N runs and a fixed
latency per page. Then, for nsml-exporter (defaults: PAGE_SIZE 100, CONCURRENCY 4) and for the
baseline in `naive_exporter.py`, each in its own process, it scrapes `/metrics` the way
Prometheus 3 does (its Accept and Accept-Encoding headers) and measures: median scrape wall time,
exporter CPU seconds per scrape, peak RSS, and the upstream requests made when 4 scrapers hit at
once.

    python benchmarks/bench_scrape.py                      # 10,000 runs, 50 ms per page
    python benchmarks/bench_scrape.py --scale              # plus the 1k / 10k / 100k table
    python benchmarks/bench_scrape.py --details            # plus DETAILS on against off
    python benchmarks/bench_scrape.py --history            # long histories against main before
                                                           # issue 21 (bench_history.py)
    python benchmarks/bench_scrape.py --runs 2000 --scrapes 5

The network floor is latency x (1 + ceil((pages - 1) / CONCURRENCY)): the first page alone, then
the rest CONCURRENCY at a time. CPU is read from /proc (user + system, all threads) around each
scrape; the median and the mean are reported. Nothing here asserts: it reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ACCESS, SECRET = "bench-access", "bench-secret"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
#: What Prometheus 3.x sends when it scrapes with its defaults (scrape.go's acceptHeader), gzip
#: included: OpenMetrics 1.0.0 with UTF-8 names allowed.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 that it signed: (ca, cert, key) as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime + stime, all threads


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


@dataclass
class Simulator:
    proc: subprocess.Popen[str]
    base_url: str
    ca: Path

    @classmethod
    def start(
        cls,
        runs: int,
        latency: float,
        span_hours: float = 72,
        extra: tuple[str, ...] = (),
        new_per_minute: float = 0,
    ) -> Simulator:
        ca, cert, key = make_certificate(Path(tempfile.mkdtemp(prefix="nsml-bench-")))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter.demo",
                "--runs",
                str(runs),
                "--latency",
                str(latency),
                "--new-runs-per-minute",
                str(new_per_minute),
                "--span-hours",
                str(span_hours),
                "--access-key",
                ACCESS,
                "--secret-key",
                SECRET,
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        return cls(proc, proc.stdout.readline().strip(), ca)

    def stats(self) -> dict[str, int]:
        root = self.base_url.split("/nsml/")[0]
        stats: dict[str, int] = requests.get(
            root + "/_sim/stats", timeout=5, verify=str(self.ca)
        ).json()
        return stats

    def upstream_requests(self) -> int:
        return self.stats().get("runs", 0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Result:
    name: str
    wall: list[float]
    cpu_per_scrape: float
    cpu_mean: float
    peak_rss_mb: float
    concurrent_upstream: int
    up: bool

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def measure(name: str, command: list[str], port: int, sim: Simulator, scrapes: int) -> Result:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(sim.ca)}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        session = requests.Session()
        session.headers.update(PROMETHEUS_HEADERS)
        body = session.get(url, timeout=120).text  # warm-up: imports, connection pools
        wall, cpu = [], []
        for _ in range(scrapes):
            cpu_before = cpu_seconds(proc.pid)
            started = time.perf_counter()
            body = session.get(url, timeout=120).text
            wall.append(time.perf_counter() - started)
            cpu.append(cpu_seconds(proc.pid) - cpu_before)
        before = sim.upstream_requests()
        barrier = threading.Barrier(4)

        def scrape() -> None:
            barrier.wait()
            requests.get(url, timeout=120, headers=PROMETHEUS_HEADERS)

        threads = [threading.Thread(target=scrape) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent = sim.upstream_requests() - before
        up = re.search(r"^nsml_up 1", body, re.MULTILINE) is not None
        # The median of per-scrape readings (whole clock ticks, 10 ms) resists this machine's
        # noisy neighbours; the mean (total over all scrapes) is finer grained. Both are shown.
        return Result(
            name,
            wall,
            statistics.median(cpu),
            statistics.fmean(cpu),
            peak_rss_mb(proc.pid),
            concurrent,
            up,
        )
    finally:
        proc.terminate()
        proc.wait(10)


def ours(port: int, sim: Simulator, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "exporter",
        "--listen-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-url",
        sim.base_url,
        "--access-key",
        ACCESS,
        "--secret-key",
        SECRET,
        "--log-level",
        "error",
        "--min-interval",
        "0",  # every timed scrape must collect: the interval would serve most from memory
        *extra,
    ]


def baseline(port: int, sim: Simulator) -> list[str]:
    return [
        sys.executable,
        str(HERE / "naive_exporter.py"),
        str(port),
        sim.base_url,
        ACCESS,
        SECRET,
    ]


def floor(runs: int, latency: float, page_size: int = 100, concurrency: int = 4) -> float:
    pages = max(1, math.ceil(runs / page_size))
    return latency * (1 + math.ceil((pages - 1) / concurrency))


def compare(runs: int, latency: float, scrapes: int) -> dict[str, object]:
    sim = Simulator.start(runs, latency)
    try:
        mine = measure("nsml-exporter", ours(port := free_port(), sim, []), port, sim, scrapes)
        naive = measure(
            "baseline", baseline(port := free_port(), sim), port, sim, max(3, scrapes // 2)
        )
    finally:
        sim.stop()
    net = floor(runs, latency)
    rows = [
        (
            "median scrape wall time",
            f"{mine.median:.3f} s",
            f"{naive.median:.3f} s",
            f"{net:.3f} s floor; ours {mine.median / net:.2f}x",
        ),
        (
            "exporter CPU per scrape, median",
            f"{mine.cpu_per_scrape:.3f} s",
            f"{naive.cpu_per_scrape:.3f} s",
            f"ours {mine.cpu_per_scrape / naive.cpu_per_scrape:.2f}x the baseline's",
        ),
        (
            "exporter CPU per scrape, mean",
            f"{mine.cpu_mean:.3f} s",
            f"{naive.cpu_mean:.3f} s",
            f"ours {mine.cpu_mean / naive.cpu_mean:.2f}x the baseline's",
        ),
        ("peak RSS", f"{mine.peak_rss_mb:.1f} MB", f"{naive.peak_rss_mb:.1f} MB", ""),
        (
            "upstream requests, 4 scrapers at once",
            str(mine.concurrent_upstream),
            str(naive.concurrent_upstream),
            f"{math.ceil(runs / 100)} pages per collection",
        ),
        ("nsml_up", str(int(mine.up)), str(int(naive.up)), ""),
    ]
    print(f"\n{runs} runs, 100 per page, {latency * 1000:.0f} ms per page, {scrapes} scrapes\n")
    print("| | nsml-exporter | baseline | |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return {
        "runs": runs,
        "latency": latency,
        "floor": net,
        "ours": mine.__dict__,
        "baseline": naive.__dict__,
    }


def details(runs: int, latency: float, scrapes: int) -> dict[str, object]:
    """DETAILS on (the default) against off, in one run: 10,000 runs over 27 hours (about 2,500
    in progress, 1,000 with series), scraped back to back. The fill: scrapes until no run is
    pending; the steady state: scrapes after it. Each wall time against the run list's floor."""
    sim = Simulator.start(runs, latency, span_hours=27)
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(sim.ca)}
    figures: dict[str, object] = {}
    try:
        for mode in ("false", "true"):
            port = free_port()
            before = sim.stats()
            proc = subprocess.Popen(
                ours(port, sim, ["--details", mode]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                wait_ready(f"http://127.0.0.1:{port}/healthz")
                session = requests.Session()
                session.headers.update(PROMETHEUS_HEADERS)
                fill: list[float] = []
                steady: list[float] = []
                in_progress = series = 0
                while len(steady) < scrapes and len(fill) < 200:
                    started = time.perf_counter()
                    body = session.get(url, timeout=120).text
                    took = time.perf_counter() - started
                    pending = re.search(r"^nsml_run_details_pending (\S+)", body, re.MULTILINE)
                    (fill if pending and float(pending[1]) > 0 else steady).append(took)
                    series = len(re.findall(r"^nsml_run_age_seconds\{", body, re.MULTILINE))
                    in_progress = sum(
                        int(float(v))
                        for v in re.findall(
                            r'^nsml_runs\{[^}]*status="RUN_STATE_IN_PROGRESS"[^}]*\} (\S+)',
                            body,
                            re.MULTILINE,
                        )
                    )
                after = sim.stats()
                figures[mode] = {
                    "fill_scrapes": len(fill),
                    "fill_median": statistics.median(fill) if fill else 0.0,
                    "steady_median": statistics.median(steady),
                    "in_progress": in_progress,
                    "series": series,
                    "requests": {
                        k: after.get(k, 0) - before.get(k, 0)
                        for k in ("runs", "projects", "run", "nodes")
                    },
                    "cpu_seconds": cpu_seconds(proc.pid),
                }
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        sim.stop()
    net = floor(runs, latency)
    off, on = figures["false"], figures["true"]
    assert isinstance(off, dict) and isinstance(on, dict)
    print(
        f"\nDETAILS: {runs} runs, {on['in_progress']} in progress, {on['series']} with series, "
        f"{latency * 1000:.0f} ms per request, floor {net:.3f} s\n"
    )
    print("| | DETAILS=false | DETAILS=true (default) |\n|---|---|---|")
    print(
        f"| fill: scrapes until no run is pending | | {on['fill_scrapes']} "
        f"(median {on['fill_median']:.3f} s = {on['fill_median'] / net:.2f}x the floor) |"
    )
    print(
        f"| steady state: median scrape | {off['steady_median']:.3f} s = "
        f"{off['steady_median'] / net:.2f}x | {on['steady_median']:.3f} s = "
        f"{on['steady_median'] / net:.2f}x |"
    )
    requests_row = f"| {off['requests']} | {on['requests']} |"
    print("| API requests in all (runs, projects, run, nodes) " + requests_row)
    return {"runs": runs, "latency": latency, "floor": net, "details": figures}


def scale(latency: float, scrapes: int) -> list[dict[str, object]]:
    print(f"\nScale (nsml-exporter, {latency * 1000:.0f} ms per page)\n")
    print("| runs | settings | median scrape | floor | CPU per scrape | peak RSS | nsml_up |")
    print("|---|---|---|---|---|---|---|")
    table = []
    for runs, extra in (
        (1_000, []),
        (10_000, []),
        (100_000, []),
        (100_000, ["--page-size", "1000"]),
        (100_000, ["--concurrency", "16", "--collect-timeout", "30"]),
    ):
        sim = Simulator.start(runs, latency)
        try:
            port = free_port()
            result = measure("nsml-exporter", ours(port, sim, extra), port, sim, scrapes)
        finally:
            sim.stop()
        size = int(extra[1]) if extra[:1] == ["--page-size"] else 100
        conc = int(extra[1]) if extra[:1] == ["--concurrency"] else 4
        net = floor(runs, latency, size, conc)
        print(
            f"| {runs:,} | {' '.join(extra) or 'defaults'} | {result.median:.3f} s | "
            f"{net:.3f} s | {result.cpu_per_scrape:.3f} s | {result.peak_rss_mb:.1f} MB | "
            f"{int(result.up)} |"
        )
        table.append({"runs": runs, "settings": extra, "floor": net, **result.__dict__})
    ten_k = next(row for row in table if row["runs"] == 10_000)
    overhead = statistics.median(ten_k["wall"]) / float(ten_k["floor"])  # type: ignore[arg-type]
    pages = 1
    while floor(pages * 100, latency) * overhead <= 9.0:
        pages += 1
    print(
        f"\nAt {latency * 1000:.0f} ms per page and {overhead:.2f}x the floor, the default "
        f"COLLECT_TIMEOUT (9 s) is outgrown at about {(pages - 1) * 100:,} runs "
        "(PAGE_SIZE 100, CONCURRENCY 4)."
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument("--scale", action="store_true", help="also the 1k/10k/100k table")
    parser.add_argument(
        "--details", action="store_true", help="also DETAILS on against off: the fill, then steady"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="long histories (10k, 100k, 1M runs) against read-on-scrape: bench_history.py",
    )
    parser.add_argument(
        "--baseline-rev",
        default="3d165bc",
        help="with --history: the read-on-scrape exporter to compare (main before issue 21)",
    )
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="with --history: run counts"
    )
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    if args.history:
        from bench_history import history

        figures = history([int(n) for n in args.sizes.split(",")], args.baseline_rev)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return
    results: dict[str, object] = {"compare": compare(args.runs, args.latency, args.scrapes)}
    if args.details:
        results["details"] = details(args.runs, args.latency, args.scrapes)
    if args.scale:
        results["scale"] = scale(args.latency, max(3, args.scrapes // 2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
