"""Fixtures shared by the tests (their helpers are in tests/helpers/, one module a concern)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.collection.reader import Reader
from tests.fake_api import FaultyServer, FaultySimulator
from tests.helpers.binaries import PrometheusRelease, require_prometheus
from tests.helpers.pki import _issue, _name, _write_key
from tests.helpers.process import ExporterProcess, start_exporter
from tests.helpers.release import build_wheel, git
from tests.helpers.settings import ACCESS, SECRET

pytest_plugins = ["tests.markers"]  # unit / process / e2e, and the guard on unit tests


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NSML_EXPORTER_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _readers_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every reader a test starts is closed when the test ends. A reader left open reads on in
    the background of the tests after it: its threads, CPU and garbage made one of them fail
    (`gc.collect()` found a leftover reader's cycles) once the order changed."""
    started: list[Reader] = []
    run = Reader._run  # starts the threads, from `start` or a first scrape

    def recorded(reader: Reader) -> bool:
        started.append(reader)
        return run(reader)

    monkeypatch.setattr(Reader, "_run", recorded)
    yield
    for reader in started:
        reader.close()
    # A read under way at `close` finishes first: wait for it, so that its log lines (a
    # completion said at DEBUG) do not land in the next test's records.
    for reader in started:
        for thread in list(reader._threads):
            if thread is not threading.current_thread():
                thread.join(10)


@pytest.fixture
def simulator() -> Iterator[FaultyServer]:
    server = FaultyServer(FaultySimulator(ACCESS, SECRET)).start()
    yield server
    server.stop()


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    started: list[ExporterProcess] = []

    def factory(*args: str, **kw: Any) -> ExporterProcess:
        proc = start_exporter(tmp_path, list(args), **kw)
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test CA", _name("test CA"), ca_key, ca_key.public_key(), ca=True)
    paths = {"ca": folder / "ca.crt"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(role, ca.subject, ca_key, key.public_key(), server=role == "server")
        paths[f"{role}_crt"] = folder / f"{role}.crt"
        paths[f"{role}_key"] = folder / f"{role}.key"
        paths[f"{role}_crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, paths[f"{role}_key"])
    return paths


@pytest.fixture(scope="session", params=[2, 3], ids=["prometheus2", "prometheus3"])
def release(request: pytest.FixtureRequest) -> PrometheusRelease:
    """Each test that takes it runs against Prometheus 2.42 (Debian stable) and 3.x."""
    return require_prometheus(request.param)


@pytest.fixture(scope="session")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A clone of this tree tagged v0.2.0, its commit, and the wheel built from it."""
    tmp = tmp_path_factory.mktemp("release")
    clone = tmp / "clone"
    root = Path(__file__).resolve().parent.parent
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    # The working tree as it is (uncommitted changes too), committed in the clone and tagged.
    changes = subprocess.run(
        ["git", "diff", "HEAD", "--binary"], cwd=root, capture_output=True, check=True
    ).stdout
    if changes:
        subprocess.run(["git", "apply", "-"], cwd=clone, input=changes, check=True)
    who = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    git(*who, "commit", "-q", "--allow-empty", "-am", "the working tree", cwd=clone)
    git(*who, "tag", "v0.2.0", cwd=clone)
    wheel = build_wheel(clone, tmp / "dist")
    return clone, git("rev-parse", "HEAD", cwd=clone), wheel
