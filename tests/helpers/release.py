"""git and wheel builds for the release tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` of the project at `source` into `out`: the one wheel it made."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel
