"""`.ci/mutate`: which mutants a change gets (docs/mutation.md). mutmut itself is replaced by a
stand-in on PATH that prints its arguments: what is tested is the choice of modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.release import git

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the script and a small package, one commit."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "mutate", tmp_path / ".ci" / "mutate")
    for module in ("exporter/nsml/paging.py", "exporter/demo/churn.py", "exporter/logs.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("X = 1\n")
    (tmp_path / "exporter" / "nsml" / "__init__.py").write_text("")
    (tmp_path / "README.md").write_text("x\n")
    git("init", "-q", "-b", "main", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base", cwd=tmp_path)
    return tmp_path


def mutate(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = repo / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mutmut").write_text('#!/bin/sh\necho "mutmut $*"\n')
    (bin_dir / "mutmut").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(repo / ".ci" / "mutate"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=30,
    )


def test_a_change_mutates_the_modules_it_touches_and_no_others(repo: Path) -> None:
    """Bugs caught: a path left with slashes (`exporter/nsml/paging.*` matches no mutant, and
    mutmut runs nothing), the demo mutated, a file outside the package, an `__init__.py`, or
    a deleted module passed on (mutmut fails on a name it does not know)."""
    for module in ("exporter/nsml/paging.py", "exporter/demo/churn.py", "README.md"):
        (repo / module).write_text("X = 2\n")
    (repo / "exporter" / "nsml" / "__init__.py").write_text("Y = 1\n")
    (repo / "exporter" / "logs.py").unlink()
    done = mutate(repo, "main")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "mutmut run exporter.nsml.paging.*"


def test_no_argument_mutates_the_whole_package(repo: Path) -> None:
    done = mutate(repo)
    assert (done.returncode, done.stdout.strip()) == (0, "mutmut run")


def test_no_change_runs_nothing_and_a_bad_base_is_named(repo: Path) -> None:
    """Bugs caught: `mutmut run` with no names mutates the whole package, hours, when a change
    touched no module; a mistyped base would do the same, or name nothing."""
    quiet = mutate(repo, "main")
    assert (quiet.returncode, quiet.stdout.strip()) == (
        0,
        "no module of exporter/ changed since main",
    )
    wrong = mutate(repo, "mian")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "not a git revision: mian"
