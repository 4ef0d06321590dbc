"""The simulator's GPU side: `GET /projects`, a run's detail and a run's nodes, as the NCP docs
describe them ("Get project list", "Get run", "Get list of nodes belonging to run").

Each run holds `nodeCount` nodes of one GPU server from a small catalogue, fixed by its identity:
notebooks one node, trainings one to four. A run in progress with several nodes has its last one
still `PENDING`, the others `RUNNING`; a finished run's nodes are `TERMINATED`. A project's
`nodeCount` is its runs' `RUNNING` nodes. One project has no runs at all. A detail carries a
`command` and `envs` with a token in them, as real ones do: the exporter must never show it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from .population import IN_PROGRESS, PENDING, PROJECTS, SimRun


class Simulator(Protocol):
    """What these endpoints read of the simulator's state (`simulator.Simulator`)."""

    first_page: int

    def now(self) -> float: ...
    def count(self, label: str) -> None: ...
    def find(self, project_id: str, run_name: str, now: float) -> SimRun | None: ...
    def visible(self, now: float) -> list[SimRun]: ...
    def format_time(self, moment: float) -> str: ...


@dataclass(frozen=True)
class GpuServer:
    code: int
    name: str


GPU_SERVERS = (
    GpuServer(1101, "NVIDIA Tesla T4 16GB x1"),
    GpuServer(1204, "NVIDIA Tesla V100 32GB x4"),
    GpuServer(1308, "NVIDIA A100 80GB x8"),
    GpuServer(1408, "NVIDIA H100 80GB x8"),
)
#: Listed by GET /projects, with no runs.
EMPTY_PROJECT = ("e5m6p7t8y9s0a1n2d3b4", "sandbox")
#: In every run detail's `command` and `envs`: it must never reach /metrics or a log.
SECRET_MARKER = "SIMULATED-TOKEN-never-exported"  # noqa: S105 (a marker, no credential)

RUN_PATH = re.compile(r"/projects/([^/]+)/runs/([^/]+)(/nodes)?")


def hardware(run: SimRun) -> tuple[GpuServer, int]:
    """The run's GPU server and node count, fixed by its identity."""
    rng = random.Random(f"{run.project_id}/{run.run_name}")
    server = rng.choice(GPU_SERVERS)
    return server, 1 if run.run_type == "NOTEBOOK" else rng.choice((1, 1, 2, 4))


def node_states(run: SimRun, status: str) -> list[str]:
    _, count = hardware(run)
    if status == PENDING:
        return ["PENDING"] * count
    if status == IN_PROGRESS:
        return ["RUNNING"] * max(1, count - 1) + ["PENDING"] * (count > 1)
    return ["TERMINATED"] * count


def run_detail(run: SimRun, status: str) -> dict[str, Any]:
    server, _ = hardware(run)
    custom = int(run.run_name) % 3 == 0 if run.run_name.isdigit() else False
    return {
        "runName": run.run_name,
        "projectId": run.project_id,
        "projectName": run.project_name,
        "status": status,
        "creator": run.creator,
        "engFullName": server.name,
        "gpuSvrCode": server.code,
        "imageType": "CUSTOM" if custom else "BASE",
        "imagePath": f"registry.example/{run.project_name}/train:latest" if custom else "",
        "command": f"python train.py --hf-token {SECRET_MARKER}",
        "envs": {"WANDB_API_KEY": SECRET_MARKER, "EPOCHS": "10"},
        "note": f"token {SECRET_MARKER}",
    }


def _paged(items: list[Any], key: str, page: int, size: int, first: int) -> dict[str, Any]:
    start = (page - first) * size
    return {key: items[start : start + size], "totalCount": len(items)}


def answer(sim: Simulator, path: str, page: int, size: int) -> tuple[int, Any] | None:
    """(200, body) or (status, details) for the projects, a run or its nodes; None for any
    other path."""
    now = sim.now()
    if path == "/projects":
        sim.count("projects")
        return 200, _paged(project_list(sim, now), "projects", page, size, sim.first_page)
    match = RUN_PATH.fullmatch(path)
    if match is None:
        return None
    project_id, run_name = unquote(match[1]), unquote(match[2])
    sim.count("nodes" if match[3] else "run")
    run = sim.find(project_id, run_name, now)
    if run is None:
        return 404, f"no run {run_name} in project {project_id}"
    status, _ = run.state(now)
    if not match[3]:
        return 200, run_detail(run, status)
    nodes = [
        {
            "nodeId": f"{run.project_id[:6]}-{run.run_name}-{n}",
            "projectId": run.project_id,
            "projectName": run.project_name,
            "runName": run.run_name,
            "state": state,
            "resourceType": hardware(run)[0].name,
            "containerImage": "nsml/default:latest",
        }
        for n, state in enumerate(node_states(run, status))
    ]
    return 200, _paged(nodes, "nodes", page, size, sim.first_page)


def project_list(sim: Simulator, now: float) -> list[dict[str, Any]]:
    runs: dict[str, int] = {}
    running: dict[str, int] = {}
    for run in sim.visible(now):
        status, _ = run.state(now)
        runs[run.project_id] = runs.get(run.project_id, 0) + 1
        held = node_states(run, status).count("RUNNING")
        running[run.project_id] = running.get(run.project_id, 0) + held
    created = sim.format_time(now - 90 * 86400)
    return [
        {
            "projectId": project_id,
            "vpcNo": 1000 + number,
            "projectName": name,
            "status": "CREATED",
            "userNo": 2689076,
            "runCount": runs.get(project_id, 0),
            "nodeCount": running.get(project_id, 0),
            "createdDate": created,
            "updatedDate": created,
        }
        for number, (project_id, name) in enumerate((*PROJECTS, EMPTY_PROJECT))
    ]
