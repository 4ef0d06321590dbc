"""Shared test helpers: settings, a simulator on loopback, the exporter as a real process."""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter

import exporter
from exporter.cli import parse_args
from exporter.demo.population import SimRun
from exporter.demo.simulator import SimulatorServer
from exporter.settings import Settings, flag_of
from tests.fake_api import FaultyServer, FaultySimulator

pytest_plugins = ["tests.markers"]  # unit / process / e2e, and the guard on unit tests

FIXTURES = Path(__file__).parent / "fixtures"
ACCESS = "AK-test-access"
SECRET = "SK-test-secret-do-not-leak-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NSML_EXPORTER_"):
            monkeypatch.delenv(name)


def settings_from(flags: dict[str, str] | None = None) -> Settings:
    """Settings as the command line `--name value ...` (over the environment) gives them."""
    argv = [part for name, value in (flags or {}).items() for part in (flag_of(name), value)]
    return parse_args(argv)[1]


def make_settings(**overrides: Any) -> Settings:
    # Unit tests scrape back to back: each scrape collects unless a test says otherwise.
    values: dict[str, Any] = {"access_key": ACCESS, "secret_key": SECRET, "min_interval": 0}
    values.update(overrides)
    return Settings(**values)


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def sim_run(project_id: str, name: str, status: str, created: float, **kw: Any) -> SimRun:
    """A run frozen in `status` (the simulator's life cycle made static for exact tests)."""
    base = {
        "project_id": project_id,
        "project_name": kw.pop("project_name", f"name-{project_id}"),
        "run_name": name,
        "run_type": kw.pop("run_type", "NOTEBOOK"),
        "creator": kw.pop("creator", "ncp-user-1"),
        "created": created,
        "pending": 0.0,
        "duration": None if status == "RUN_STATE_IN_PROGRESS" else 1.0,
        "outcome": status,
    }
    base.update(kw)
    return SimRun(**base)


def static_runs(count: int, projects: int = 5) -> list[SimRun]:
    """`count` runs over `projects` projects, two in three in progress, frozen in their state."""
    now = time.time()
    return [
        sim_run(
            f"p{n % projects}",
            str(n),
            "RUN_STATE_IN_PROGRESS" if n % 3 else "RUN_STATE_COMPLETED",
            created=float(int(now - 3600 - n)),
        )
        for n in range(count)
    ]


@pytest.fixture
def simulator() -> Iterator[FaultyServer]:
    server = FaultyServer(FaultySimulator(ACCESS, SECRET)).start()
    yield server
    server.stop()


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


# -- a fake API behind requests, for unit tests without sockets ---------------------------------

PageHandler = Callable[[int, int], tuple[int, Any]]


@dataclass
class Call:
    uri: str
    headers: dict[str, str]

    @property
    def page(self) -> int:
        return int(parse_qs(urlsplit(self.uri).query)["page"][0])


class FakeAdapter(HTTPAdapter):
    """A requests transport adapter that answers `GET .../projects/runs` from a function.

    The function gets (page, pageSize) and returns (status, body); bodies are JSON-encoded unless
    they are bytes. A `TimeoutError` it raises becomes requests' `ReadTimeout`. Every request is
    recorded, headers included.
    """

    def __init__(self, handler: PageHandler) -> None:
        super().__init__()
        self.handler = handler
        self.calls: list[Call] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        self.calls.append(Call(f"{parts.path}?{parts.query}", dict(request.headers)))
        query = parse_qs(parts.query)
        try:
            status, body = self.handler(int(query["page"][0]), int(query["pageSize"][0]))
        except TimeoutError as error:
            raise requests.exceptions.ReadTimeout(str(error), request=request) from None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = urllib3.HTTPResponse(
            body=io.BytesIO(raw),
            headers={"Content-Type": "application/json", "Content-Length": str(len(raw))},
            status=status,
            preload_content=False,
        )
        return self.build_response(request, answer)

    @property
    def pages(self) -> list[int]:
        return [call.page for call in self.calls]


def api_run(
    project_id: str,
    name: str,
    status: str = "RUN_STATE_COMPLETED",
    created: str = "2024-09-03 10:24:54",
    **kw: Any,
) -> dict[str, Any]:
    run = {
        "runName": name,
        "runType": "NOTEBOOK",
        "projectId": project_id,
        "projectName": f"name-{project_id}",
        "status": status,
        "creator": "ncp-user-1",
        "createTime": created,
        "updateTime": created,
    }
    run.update(kw)
    return run


# -- certificates, made in the tests (no private key is checked in) ---------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    common: str,
    issuer: x509.Name,
    signer: Any,
    public: Any,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


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


# -- tools that live outside Python ----------------------------------------------------------


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


@pytest.fixture(scope="session", params=[2, 3], ids=["prometheus2", "prometheus3"])
def release(request: pytest.FixtureRequest) -> PrometheusRelease:
    """Each test that takes it runs against Prometheus 2.42 (Debian stable) and 3.x."""
    return require_prometheus(request.param)


@dataclass
class ReadRuns:
    """The runs one full read took, by identity, and what it found."""

    runs: dict[tuple[str, str], Any]
    result: Any

    @property
    def total_count(self) -> int:
        return int(self.result.total_count)


def fetch_runs(client: Any, deadline: float | None = None, zone: str = "Asia/Seoul") -> ReadRuns:
    """`client.read_runs` with every run it takes kept (tests only: the exporter keeps none)."""
    from zoneinfo import ZoneInfo

    from exporter.nsml.models import to_timestamp

    runs: dict[tuple[str, str], Any] = {}
    tz = ZoneInfo(zone)
    result = client.read_runs(
        lambda page: runs.update(((run["projectId"], run["runName"]), run) for run in page),
        lambda run: to_timestamp(run["createTime"], tz),
        deadline=lambda: deadline,
    )
    return ReadRuns(runs, result)


# -- a release: the committed tree, tagged ----------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


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
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), "."],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("*.whl")
    return clone, git("rev-parse", "HEAD", cwd=clone), wheel
