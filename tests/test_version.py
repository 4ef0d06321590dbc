"""The version and revision the package reports (`nsml_exporter_build_info`, `--version`)."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator

import pytest

import exporter


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A stand-in for the `_version` module setuptools-scm writes at build time; the package
    is imported again with it, and again without it after the test."""
    fake = types.ModuleType("exporter._version")
    monkeypatch.setitem(sys.modules, "exporter._version", fake)
    yield fake
    monkeypatch.undo()
    importlib.reload(exporter)


@pytest.mark.parametrize(("node", "revision"), [("None", "unknown"), ("", "unknown")])
def test_a_build_without_scm_metadata_reports_an_unknown_revision(
    built: types.ModuleType, node: str, revision: str
) -> None:
    """Bug caught (issue 27): a build from a tree without git metadata (setuptools-scm writes
    the node as "None") served `revision="None"` in nsml_exporter_build_info."""
    built.__version__, built.__revision__ = "0.2.0", node
    assert importlib.reload(exporter).__revision__ == revision


def test_a_built_revision_loses_its_g_prefix(built: types.ModuleType) -> None:
    """Bug caught: the revision served as setuptools-scm writes it (`g1a2b3c4`), not as git
    shows it (`1a2b3c4`)."""
    built.__version__, built.__revision__ = "0.2.0", "g1a2b3c4"
    reloaded = importlib.reload(exporter)
    assert (reloaded.__version__, reloaded.__revision__) == ("0.2.0", "1a2b3c4")
