"""A real Prometheus server for the end-to-end tests: started on a config, queried over its API."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.helpers.binaries import PrometheusRelease
from tests.helpers.process import free_port


class Prometheus:
    def __init__(self, url: str, release: PrometheusRelease, log: Path) -> None:
        self.url = url
        self.release = release
        self.log = log

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + path, params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if isinstance(data["result"], list) else [data["result"]]

    def query_range(self, expr: str, seconds: int = 15, step: float = 1) -> list[dict[str, Any]]:
        end = time.time()
        data = self.get("/api/v1/query_range", query=expr, start=end - seconds, end=end, step=step)
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.get("/api/v1/targets")["activeTargets"]
        return targets


@contextlib.contextmanager
def running_prometheus(
    release: PrometheusRelease,
    folder: Path,
    config: dict[str, Any],
    ready: Callable[[Prometheus], bool],
    wait: float = 60,
) -> Iterator[Prometheus]:
    """Prometheus `release` on `config` until `ready(prometheus)` holds (or fail, with its log)."""
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = folder / "prometheus.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                release.prometheus,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", release, log_path)
    try:
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(requests.RequestException, AssertionError, LookupError):
                if ready(prometheus):
                    break
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, (
                f"Prometheus {release.version} was not ready in {wait}s:\n{log_path.read_text()}"
            )
            time.sleep(0.5)
        yield prometheus
    finally:
        proc.terminate()
        proc.wait(10)
