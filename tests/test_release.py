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


def find_actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    if not beside.exists():
        pytest.fail("actionlint is not installed: it comes with the [test] extras")
    return str(beside)


def test_every_workflow_passes_actionlint() -> None:
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert workflows
    result = subprocess.run(
        [find_actionlint(), "-shellcheck=", *map(str, workflows)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "")


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    """Bug caught: a lint that passes anything (a wrong path, no workflow read)."""
    broken = (
        (WORKFLOWS / "release.yml")
        .read_text()
        .replace("needs.version.outputs.version", "needs.version.outputs.versoin", 1)
    )
    (tmp_path / "release.yml").write_text(broken)
    result = subprocess.run(
        [find_actionlint(), "-shellcheck=", str(tmp_path / "release.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "versoin" in result.stdout


def test_the_release_publishes_the_image_the_chart_and_the_package_on_a_v_tag() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML reads the key `on` as True
    jobs = workflow["jobs"]
    build = next(s for s in jobs["image"]["steps"] if s.get("id") == "build")["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64"
    assert build["sbom"] is True and build["provenance"] == "mode=max"
    assert any("cosign sign" in s.get("run", "") for s in jobs["image"]["steps"])
    assert jobs["package"]["permissions"]["id-token"] == "write"  # trusted publishing
    assert any("helm push" in s.get("run", "") for s in jobs["chart"]["steps"])


def test_release_notes_are_the_tags_changelog_section() -> None:
    """Bug caught: notes taken from the wrong section, or an empty one passing silently."""
    script = ROOT / ".github" / "changelog-section"
    notes = subprocess.run([script, "Unreleased"], capture_output=True, text=True, check=True)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    section = changelog.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert notes.stdout.strip() == section.strip()
    missing = subprocess.run([script, "9.9.9"], capture_output=True, text=True, check=False)
    assert missing.returncode != 0


def test_dependency_updates_cover_pip_the_dockerfile_and_the_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {
        "pip",
        "docker",
        "github-actions",
    }


@pytest.mark.parametrize(
    ("lock", "source"),
    [("requirements.lock", "pyproject.toml"), ("requirements-build.lock", "requirements-build.in")],
)
def test_the_locks_are_what_pip_compile_makes_of_their_sources(lock: str, source: str) -> None:
    """Every requirement of the source is pinned, with hashes, and nothing else is asked of an
    index here: the lock is made by pip-compile (README: Releases)."""
    text = (ROOT / lock).read_text()
    assert "--index-url" not in text and "--find-links" not in text
    pins = [line for line in text.splitlines() if "==" in line and not line.startswith(" ")]
    assert pins and all(line.endswith("\\") for line in pins)  # each followed by its hashes
    if source == "pyproject.toml":
        import tomllib

        wanted = tomllib.loads((ROOT / source).read_text())["project"]["dependencies"]
    else:
        lines = (ROOT / source).read_text().splitlines()
        wanted = [line for line in lines if line and line[0] != "#"]
    names = {p.split("==")[0].lower() for p in pins}
    for requirement in wanted:
        name = requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert name.replace("_", "-") in names, requirement
