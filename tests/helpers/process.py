"""The exporter as a real process: started, scraped, stopped, and its CLI run to completion."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

import exporter
from exporter.demo.simulator import SimulatorServer
from tests.helpers.http import exchange
from tests.helpers.settings import ACCESS, SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ExporterProcess:
    proc: subprocess.Popen[str]
    url: str
    log_path: Path
    session: requests.Session = field(default_factory=requests.Session)

    def get(self, path: str = "/metrics", **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        # Per request: REQUESTS_CA_BUNDLE in the environment would beat Session.verify.
        kw.setdefault("verify", self.session.verify)
        kw.setdefault("cert", self.session.cert)
        return self.session.get(self.url + path, **kw)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an exporter process a test starts: this one without NSML_EXPORTER_*
    settings, plus `env`, importing the very package the tests import (so that a mutation
    tool's mutated copy reaches the process too, not the installed package)."""
    tree = str(Path(exporter.__file__).resolve().parent.parent)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NSML_EXPORTER_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))
    clean.update(env or {})
    return clean


def start_exporter(
    tmp_path: Path,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    ready_path: str = "/healthz",
    verify: Any = True,
    cert: Any = None,
) -> ExporterProcess:
    port = free_port()
    log_path = tmp_path / f"exporter-{port}.log"
    if "--min-interval" not in args:  # tests scrape back to back and expect fresh collections
        args = [*args, "--min-interval", "0"]
    full_env = process_env(env)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--listen-address",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
        )
    exporter = ExporterProcess(proc, f"{scheme}://127.0.0.1:{port}", log_path)
    exporter.session.verify = verify
    exporter.session.cert = cert
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited {proc.returncode}:\n{exporter.logs()}")
        with contextlib.suppress(requests.RequestException):
            if exporter.get(ready_path, timeout=1).status_code == 200:
                return exporter
        time.sleep(0.05)
    exporter.stop()
    raise AssertionError(f"exporter did not become ready:\n{exporter.logs()}")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m exporter ARGS` to completion, with only `env` for NSML_EXPORTER_* settings."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env=process_env(env),
        timeout=60,
        check=False,
    )


def exporter_args_for(server: SimulatorServer, *extra: str) -> list[str]:
    return ["--base-url", server.base_url, "--access-key", ACCESS, *extra]


def exporter_env() -> dict[str, str]:
    """The secret goes through the environment, as it would in a Deployment."""
    return {"NSML_EXPORTER_SECRET_KEY": SECRET}


def raw(exporter: ExporterProcess, data: bytes, wait: float = 5.0) -> bytes:
    """Send `data` to the exporter on a new connection and read until it closes it (or
    `wait`)."""
    host, port = exporter.url.removeprefix("http://").split(":")
    return exchange((host, int(port)), data, wait)


def status_lines(answer: bytes) -> list[str]:
    return [
        line.decode("latin-1")
        for line in answer.split(b"\r\n")
        if line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 "))
    ]


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes `sock` (EOF or reset) within `within` seconds, whatever it
    sent before (a ServerHello, a TLS alert)."""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
