"""Runs as the simulator keeps them and as the API lists them, and a read that keeps them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from exporter.demo.population import SimRun
from exporter.nsml.models import Run, decode_page

IN_PROGRESS, COMPLETED = "RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED"
Runs = list[Run]


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


def run_list(runs: list[dict[str, Any]]) -> Runs:
    page = decode_page(json.dumps({"runList": runs, "totalCount": len(runs)}).encode())
    return page["runList"]


def frozen_runs(count: int, start: float) -> list[Any]:
    """`count` runs one second apart from `start`, over three projects, frozen in their state."""
    return [
        sim_run(
            f"p{n % 3}",
            str(n),
            IN_PROGRESS if n % 4 == 0 else COMPLETED,
            created=start + n,
            run_type="TRAIN" if n % 2 else "NOTEBOOK",
        )
        for n in range(count)
    ]
