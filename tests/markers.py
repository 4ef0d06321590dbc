"""The suite's three kinds of test, and a guard that keeps the quick kind quick.

- `unit`: in-process only (threads and loopback sockets are fine; no subprocess, no binary).
  `pytest -m unit` is the quick check of a change.
- `process`: starts the exporter, the simulator or the CLI as a process.
- `e2e`: real Prometheus, promtool, podman, helm, or packaging (the modules in `E2E_MODULES`).

A test carries `process` or `e2e` where it says so (a decorator, or its module's `pytestmark`);
every other test is `unit`. The guard makes that claim true: a `unit` test that starts a
process, in its own body or in any fixture it sets up, fails and says which mark it needs.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

KINDS = ("unit", "process", "e2e")
E2E_MODULES = frozenset(
    {
        "test_alerts",
        "test_docker",
        "test_e2e_prometheus",
        "test_e2e_scrape_modes",
        "test_helm",
        "test_release",
    }
)

_running: list[pytest.Item] = []  # the test being set up or run (one at a time)
_popen_init = subprocess.Popen.__init__


def _guarded_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    if _running and _running[0].get_closest_marker("unit") is not None:
        raise AssertionError(
            f"{_running[0].nodeid} is marked unit but starts a process ({args[0]!r:.80}): "
            "mark it `process` (or `e2e`)"
        )
    _popen_init(self, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _guarded_init  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _popen_init  # type: ignore[method-assign]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(kind) for kind in KINDS):
            continue
        module = item.module.__name__.rpartition(".")[2] if item.module else ""  # type: ignore[attr-defined]
        item.add_marker("e2e" if module in E2E_MODULES else "unit")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[:] = [item]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _running.clear()
