"""Programs outside Python (Prometheus 2 and 3, promtool, podman): found, or skipped with a
reason (a failure under CI)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _missing(message: str) -> None:
    """Skip, or under CI's REQUIRE_E2E=1 fail: CI must run every test that needs a binary."""
    if os.environ.get("REQUIRE_E2E") == "1":
        pytest.fail(message + " and REQUIRE_E2E=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, package: str = "prometheus") -> str:
    """The path of `name`; skip (or, under CI's REQUIRE_E2E=1, fail) when it is not installed."""
    import shutil

    path = shutil.which(name)
    if path is None:
        _missing(
            f"'{name}' is not installed (Debian package '{package}'; `apt-get install {package}`)"
        )
    assert path is not None
    return path


@dataclass(frozen=True)
class PrometheusRelease:
    """A Prometheus server and its promtool, of one major version."""

    major: int
    prometheus: str
    promtool: str
    version: str


PROMETHEUS3_DIR = Path(
    os.environ.get("NSML_PROMETHEUS3_DIR", Path.home() / ".cache/nsml-exporter/prometheus3")
)


WHERE = {
    2: "Debian stable's 2.42 on PATH: `apt-get install prometheus`",
    3: f"Debian unstable's 3.x in {PROMETHEUS3_DIR}: `.ci/fetch-prometheus3`",
}


def _version(binary: str) -> str:
    try:
        first = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.split("\n")[0]
    except OSError:
        return ""
    # "prometheus, version 3.5.3+ds1 (branch: ...)"
    return first.split("version ")[1].split(" ")[0] if "version " in first else ""


def find_prometheus(major: int) -> PrometheusRelease | None:
    import shutil

    for folder in (None, str(PROMETHEUS3_DIR / "usr/bin")):
        server = shutil.which("prometheus", path=folder)
        tool = shutil.which("promtool", path=folder)
        if server is None or tool is None:
            continue
        version = _version(server)
        if version.startswith(f"{major}.") and _version(tool).startswith(f"{major}."):
            return PrometheusRelease(major, server, tool, version)
    return None


def require_prometheus(major: int) -> PrometheusRelease:
    release = find_prometheus(major)
    if release is None:
        _missing(f"Prometheus {major} is not here ({WHERE[major]})")
    assert release is not None
    return release
