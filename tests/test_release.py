"""Releases: one version from the git tag everywhere, the chart packaged at it, the release
workflow and the dependency-update config checked statically (they cannot run here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.release import build_wheel

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


def test_the_wheel_carries_the_license_and_the_projects_metadata(
    tagged: tuple[Path, str, Path],
) -> None:
    """Bug caught (issue 28): no LICENSE file though the metadata says Apache-2.0, no project
    URLs and no classifiers on PyPI's page."""
    _, _, wheel = tagged
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read("nsml_exporter-0.2.0.dist-info/METADATA").decode()
    assert "nsml_exporter-0.2.0.dist-info/licenses/LICENSE" in names
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "\nLicense-File: LICENSE\n" in metadata
    assert "\nProject-URL: Source, https://github.com/nsml-exporter/nsml-exporter\n" in metadata
    assert "\nClassifier: Topic :: System :: Monitoring\n" in metadata
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_a_source_archive_of_a_tag_builds_that_version(
    tagged: tuple[Path, str, Path], tmp_path: Path
) -> None:
    """Bug caught (issue 28): a GitHub source archive (`git archive`, no .git) installed as
    version 0.0.0 with revision unknown: nothing filled `.git_archival.txt`."""
    clone, commit, _ = tagged
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "v0.2.0"], cwd=clone, capture_output=True, check=True
    ).stdout
    source = tmp_path / "nsml-exporter-0.2.0"
    source.mkdir()
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    assert not (source / ".git").exists()
    assert f"node: {commit}" in (source / ".git_archival.txt").read_text()
    wheel = build_wheel(source, tmp_path)
    assert wheel.name.startswith("nsml_exporter-0.2.0-")


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
    # Released, it renders with no image named: the one that release published.
    keys = {"nsml": {"accessKey": "a", "secretKey": "b"}}
    rendered = helm.Chart.load(str(archive)).render(keys, name="rel", namespace="monitoring")
    deployment = rendered["nsml-exporter/templates/deployment.yaml"]
    assert 'image: "ghcr.io/nsml-exporter/nsml-exporter:0.2.0"' in deployment


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
        .replace("needs.validate.outputs.version", "needs.validate.outputs.versoin", 1)
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
    build = next(s for s in jobs["image"]["steps"] if "build-push-action" in s.get("uses", ""))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True and build["with"]["provenance"] == "mode=max"
    assert "push" not in build["with"]  # built as an archive; pushed once everything built
    push = "\n".join(s.get("run", "") for s in jobs["publish-image"]["steps"])
    assert "cosign sign" in push
    assert '"docker://$IMAGE:$VERSION"' in push  # X.Y.Z, then X.Y and X
    assert 'for tag in "$MINOR" "$MAJOR"' in push and '"docker://$IMAGE:$tag"' in push
    assert any("helm push" in s.get("run", "") for s in jobs["publish-chart"]["steps"])
    assert any("pypi-publish" in s.get("uses", "") for s in jobs["publish-pypi"]["steps"])
    assert jobs["publish-pypi"]["environment"]["url"].startswith("https://pypi.org/project/")


def requirements(jobs: dict[str, Any], name: str) -> set[str]:
    """Every job `name` waits for, directly or not."""
    needs = jobs[name].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(requirements(jobs, job) for job in direct))


def test_nothing_is_published_before_the_tests_and_every_build_passed() -> None:
    """Bugs caught (issue 28): PyPI published at once, beside the image build; the CHANGELOG
    checked after the package was out; a publish job that does not wait for the tests."""
    jobs = yaml.safe_load((WORKFLOWS / "release.yml").read_text())["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"  # the CI, on the tagged commit
    builds = {"validate", "test", "package", "image", "chart"}
    publishing = {"publish-pypi", "publish-image", "publish-chart", "github-release"}
    assert set(jobs) == builds | publishing
    for job in publishing:
        assert builds <= requirements(jobs, job), job
    for job in ("package", "image", "chart"):
        assert {"validate", "test"} <= requirements(jobs, job), job
    assert {"publish-pypi", "publish-image", "publish-chart"} <= requirements(
        jobs, "github-release"
    )
    validate = "\n".join(s.get("run", "") for s in jobs["validate"]["steps"])
    assert ".github/changelog-section" in validate and "python -m build" in validate


def test_publish_rights_are_held_only_by_the_jobs_that_publish() -> None:
    """Bug caught (issue 28): the build job holding `id-token: write` (and every job whatever
    the workflow grants by default)."""
    workflow = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    assert workflow["permissions"] == {}
    writes = {
        name: {scope for scope, level in job.get("permissions", {}).items() if level == "write"}
        for name, job in workflow["jobs"].items()
    }
    assert writes == {
        "validate": set(),
        "test": set(),
        "package": set(),
        "image": set(),
        "chart": set(),
        "publish-pypi": {"id-token"},
        "publish-image": {"packages", "id-token", "attestations"},
        "publish-chart": {"packages"},
        "github-release": {"contents"},
    }


def test_ci_runs_the_readmes_test_command_and_the_workflow_linters() -> None:
    """Bug caught (issue 28): no workflow tests a push, so a tag publishes whatever it points
    at."""
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert set(workflow[True]) == {"push", "pull_request", "workflow_call"}
    runs = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert any("bash .ci/run" in run for run in runs)
    assert any("actionlint" in run and "zizmor" in run for run in runs)


def test_every_action_is_pinned_by_commit_with_its_version() -> None:
    """Bug caught (issue 28): actions referenced by a tag or a branch, which their owner (or
    whoever takes the account) can move under a release."""
    uses = [
        (path.name, line.strip())
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for line in path.read_text().splitlines()
        if line.strip().startswith(("uses:", "- uses:"))
    ]
    assert uses
    for name, line in uses:
        reference = line.split("uses:", 1)[1].strip()
        if reference.startswith("./"):
            continue  # a workflow of this repository
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", reference), (
            name,
            reference,
        )


def find_zizmor() -> str:
    beside = Path(sys.executable).parent / "zizmor"
    if not beside.exists():
        pytest.fail("zizmor is not installed: it comes with the [test] extras")
    return str(beside)


def zizmor(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_zizmor(), "--offline", "--min-severity", "medium", "--format", "plain", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_workflows_have_no_medium_or_high_zizmor_finding() -> None:
    """Bug caught (issue 28): 17 high and 5 medium findings (unpinned actions, `github.actor`
    expanded inside a script, checkouts keeping their credentials)."""
    result = zizmor(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_would_catch_a_template_injection(tmp_path: Path) -> None:
    """Bug caught: a zizmor check that passes anything (a wrong path, no workflow read)."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    workflow = (WORKFLOWS / "release.yml").read_text()
    injected = workflow.replace('--username "$ACTOR"', '--username "${{ github.actor }}"', 1)
    assert injected != workflow
    (folder / "release.yml").write_text(injected)
    result = zizmor(folder)
    assert result.returncode != 0 and "template-injection" in result.stdout + result.stderr


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
    """Bug caught (issue 28): locks named `*.lock`, which Dependabot's pip ecosystem never
    reads (it reads `requirements*.txt` and `.in` files), so the image's pins never moved."""
    assert sorted(path.name for path in ROOT.glob("requirements*.txt")) == [
        "requirements-build.txt",
        "requirements.txt",
    ]
    assert not list(ROOT.glob("*.lock"))
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {
        "pip",
        "docker",
        "github-actions",
    }


@pytest.mark.parametrize(
    ("lock", "source"),
    [("requirements.txt", "pyproject.toml"), ("requirements-build.txt", "requirements-build.in")],
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
