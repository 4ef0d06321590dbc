"""Releases: one version from the git tag everywhere, the chart packaged at it, the release
workflow and the dependency-update config checked statically (they cannot run here)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def test_a_tag_gives_its_version_to_the_package_the_cli_and_build_info(
    tagged: tuple[Path, str, Path], tmp_path: Path
) -> None:
    """Bug caught: a version written by hand (0.1.0 whatever the tag), or a revision that is
    not the commit's."""
    _, commit, wheel = tagged
    assert wheel.name.startswith("nsml_exporter-0.2.0-")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        metadata = archive.read("nsml_exporter-0.2.0.dist-info/METADATA").decode()
    assert "\nVersion: 0.2.0\n" in metadata
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = [sys.executable, "-m", "exporter"]
    version = subprocess.run(
        [*run, "--version"], env=env, capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert version.stdout.strip() == "nsml-exporter 0.2.0"
    once = subprocess.run(
        [*run, "--demo", "--once"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert once.returncode == 0, once.stderr[-2000:]
    assert f'revision="{commit}"' in once.stdout
    assert 'version="0.2.0"' in once.stdout


def test_the_chart_packaged_at_the_tag_runs_that_image_from_ghcr(
    tagged: tuple[Path, str, Path], tmp_path: Path
) -> None:
    """Bug caught: a chart whose version or appVersion stays at the hand-written one, or whose
    default image is no published one."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in the [test] extras")
    clone, _, _ = tagged
    archive = helm.package(
        str(clone / "helm" / "nsml-exporter"),
        destination=str(tmp_path),
        version="0.2.0",
        app_version="0.2.0",
    )
    with tarfile.open(archive) as packed:
        chart = yaml.safe_load(packed.extractfile("nsml-exporter/Chart.yaml").read())  # type: ignore[union-attr]
        values = yaml.safe_load(packed.extractfile("nsml-exporter/values.yaml").read())  # type: ignore[union-attr]
    assert (chart["version"], chart["appVersion"]) == ("0.2.0", "0.2.0")
    assert values["image"]["repository"] == "ghcr.io/nsml-exporter/nsml-exporter"
    assert values["image"]["tag"] == ""  # the chart's appVersion
