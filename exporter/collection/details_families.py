"""The GPU and capacity families, from one collection's `DetailsView`: projects with their node
counts, each run's GPU server and its nodes by state, and how many runs are still pending."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from .details import DetailsView
from .snapshot import Record

PROJECT_LABELS = ["project_id", "project"]
INFO_LABELS = ["project_id", "project", "run", "gpu_server", "gpu_server_code", "image_type"]
NODE_LABELS = ["project_id", "project", "run", "state"]


def details_families(view: DetailsView, series: Iterable[Record]) -> Iterator[Metric]:
    """The GPU and capacity families of one collection's runs with series.

    nsml_project_info{project="vision-research",project_id="k3x9",status="CREATED"} 1.0
    nsml_project_nodes{project="vision-research",project_id="k3x9"} 4.0
    nsml_run_info{gpu_server="A100 80GB",gpu_server_code="29",image_type="BASE",...} 1.0
    nsml_run_nodes{project="vision-research",project_id="k3x9",run="12",state="RUNNING"} 2.0
    nsml_run_details_pending 0.0
    """
    if view.projects is not None:
        info = GaugeMetricFamily(
            "nsml_project_info",
            "1 for every project GET /projects lists, with its status",
            labels=[*PROJECT_LABELS, "status"],
        )
        nodes = GaugeMetricFamily(
            "nsml_project_nodes", "The project's nodeCount", labels=PROJECT_LABELS
        )
        for project in view.projects:
            info.add_metric([project.project_id, project.name, project.status], 1)
            if project.nodes is not None:
                nodes.add_metric([project.project_id, project.name], project.nodes)
        yield info
        yield nodes
    run_info = GaugeMetricFamily(
        "nsml_run_info",
        "1 for each run with per-run series, with its GPU server and image type",
        labels=INFO_LABELS,
    )
    run_nodes = GaugeMetricFamily(
        "nsml_run_nodes", "The run's nodes in each node state", labels=NODE_LABELS
    )
    for record in series:
        key = record.key
        labels = [record.project_id, record.project, record.run]
        found = view.info.get(key)
        if found is not None:
            run_info.add_metric(
                [*labels, found.gpu_server, found.gpu_server_code, found.image_type], 1
            )
        for state, count in sorted(view.nodes.get(key, {}).items()):
            run_nodes.add_metric([*labels, state], count)
    yield run_info
    yield run_nodes
    yield GaugeMetricFamily(
        "nsml_run_details_pending",
        "Runs with per-run series whose detail or node list is not read yet",
        value=view.pending,
    )
