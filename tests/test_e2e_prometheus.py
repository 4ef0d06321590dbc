"""End to end, on Prometheus 2.42 and 3.x alike: a real Prometheus scrapes two real exporter
processes (demo mode: each talks over HTTP to its own NSML simulator) every second, in a job named
"nsml" (not "nsml-exporter"), with the shipped alert rules loaded for that job. Every dashboard
query, with template variables filled as Grafana fills them, must parse and return data for each
exporter, never summed across them; every alert rule must evaluate cleanly."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.binaries import PrometheusRelease
from tests.helpers.process import ExporterProcess, start_exporter
from tests.prometheus_server import Prometheus, running_prometheus

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "grafana" / "nsml-exporter.json").read_text())
RULES = ROOT / "prometheus" / "nsml-exporter.rules.yml"
SCRAPE_INTERVAL = 1
JOB = "nsml"


@dataclass
class Stack:
    prometheus: Prometheus
    exporters: dict[str, ExporterProcess]  # by target (instance)


@pytest.fixture(scope="module")
def stack(release: PrometheusRelease, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"e2e-prometheus{release.major}")
    exporters = [start_exporter(tmp, ["--demo"]) for _ in range(2)]
    targets = {e.url.removeprefix("http://"): e for e in exporters}
    rules = tmp / "nsml-exporter.rules.yml"  # the job named in its one place
    rules.write_text(RULES.read_text().replace('up{job="nsml-exporter"}', f'up{{job="{JOB}"}}'))
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL}s",
        },
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
    }

    def eight_scrapes_each(prometheus: Prometheus) -> bool:
        series = prometheus.query_range(f'nsml_up{{job="{JOB}"}}')
        return len(series) == 2 and min(len(s["values"]) for s in series) >= 8

    try:
        with running_prometheus(release, tmp, config, eight_scrapes_each) as prometheus:
            yield Stack(prometheus, targets)
    finally:
        for exporter in exporters:
            exporter.stop()


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def fill(expr: str, project: str = ".*", status: str = ".*", instance: str = ".*") -> str:
    """Template variables as Grafana substitutes them for Prometheus."""
    return (
        expr.replace("$__rate_interval", f"{4 * SCRAPE_INTERVAL}s")
        .replace("$job", JOB)
        .replace("$instance", instance)
        .replace("$project", project)
        .replace("$status", status)
    )


def run(prometheus: Prometheus, target: dict[str, Any], expr: str) -> list[dict[str, Any]]:
    if target.get("instant", False):
        return prometheus.query(expr)
    return prometheus.query_range(expr)


def test_both_targets_are_up_in_a_job_not_named_nsml_exporter(stack: Stack) -> None:
    targets = stack.prometheus.targets()
    assert sorted((t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets) == [
        (JOB, instance, "up") for instance in sorted(stack.exporters)
    ]
    assert [float(r["value"][1]) for r in stack.prometheus.query("nsml_up")] == [1, 1]


def test_template_variables_find_values(stack: Stack) -> None:
    prometheus = stack.prometheus
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "project", "status"]
    found = {}
    for name in ("job", "instance", "project", "status"):
        definition = fill(variables[name]["definition"])
        match = re.fullmatch(r"label_values\((\w+(?:\{.*\})?), (\w+)\)", definition)
        assert match, definition
        found[name] = prometheus.get(f"/api/v1/label/{match[2]}/values", **{"match[]": match[1]})
    assert found["job"] == [JOB]
    assert sorted(found["instance"]) == sorted(stack.exporters)
    assert "음성인식-팀" in found["project"]
    assert "RUN_STATE_IN_PROGRESS" in found["status"]


@pytest.mark.parametrize("selection", ["all", "one project", "one instance"])
@pytest.mark.parametrize("panel", panels(), ids=lambda p: p["title"])
def test_every_dashboard_panel_returns_data_per_exporter(
    stack: Stack, panel: dict[str, Any], selection: str
) -> None:
    """Data for every panel; every series carries its exporter's instance, so two exporters are
    never summed; one instance selected shows that instance alone."""
    project, instance = ".*", ".*"
    if selection == "one project":
        project = "vision-research"
    chosen = sorted(stack.exporters)[0]
    if selection == "one instance":
        instance = chosen.replace(".", "\\\\.")
    assert panel["fieldConfig"]["defaults"].get("unit"), "every panel has a unit"
    assert 'job="' not in json.dumps(panel), "no hard-coded job"
    for target in panel["targets"]:
        expr = fill(target["expr"], project=project, instance=instance)
        assert "$" not in expr, expr
        result = run(stack.prometheus, target, expr)
        assert result, f"{panel['title']}: no data for {expr}"
        instances = {series["metric"].get("instance") for series in result}
        expected = {chosen} if selection == "one instance" else set(stack.exporters)
        assert instances == expected, (panel["title"], expr, instances)


def test_status_is_honoured_by_every_panel_that_shows_statuses(stack: Stack) -> None:
    for panel in panels():
        for target in panel["targets"]:
            if "status" not in target["expr"]:
                continue
            assert "$status" in target["expr"], (panel["title"], target["expr"])
            expr = fill(target["expr"], status="RUN_STATE_NO_SUCH")
            assert run(stack.prometheus, target, expr) == [], (panel["title"], expr)


def test_runs_in_progress_are_each_exporters_own_never_a_sum(stack: Stack) -> None:
    panel = next(p for p in panels() if p["title"] == "Runs in progress")
    shown = {
        r["metric"]["instance"]: float(r["value"][1])
        for r in stack.prometheus.query(fill(panel["targets"][0]["expr"]))
    }
    for instance, exporter in stack.exporters.items():
        own = sum(
            s.value
            for f in text_string_to_metric_families(exporter.get().text)
            for s in f.samples
            if s.name == "nsml_runs" and s.labels["status"] == "RUN_STATE_IN_PROGRESS"
        )
        assert own > 0
        assert abs(shown[instance] - own) <= max(2, 0.1 * own), (instance, shown, own)


def test_last_successful_collection_says_never_rather_than_57_years(stack: Stack) -> None:
    """Before a first success the timestamp is 0: the query must give no sample (Grafana then
    shows the panel's noValue, "never"), not time() - 0."""
    panel = next(p for p in panels() if p["title"] == "Last successful collection")
    assert panel["fieldConfig"]["defaults"]["noValue"] == "never"
    expr = fill(panel["targets"][0]["expr"])
    assert stack.prometheus.query(expr)  # after successes: a value per exporter
    never = expr.replace(
        "nsml_last_success_timestamp_seconds{", "0 * nsml_last_success_timestamp_seconds{"
    )
    assert never != expr
    assert stack.prometheus.query(never) == []


def test_every_alert_rule_evaluates_cleanly(stack: Stack) -> None:
    prometheus = stack.prometheus
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    source = yaml.safe_load(RULES.read_text())
    assert {r["name"] for r in rules} == {
        r.get("alert", r.get("record")) for g in source["groups"] for r in g["rules"]
    }
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule["lastEvaluation"] != "0001-01-01T00:00:00Z", rule
        prometheus.query(rule["query"])  # parses as a query too


def test_long_running_demo_runs_make_the_alert_pending(stack: Stack) -> None:
    """The demo has notebooks running for days: the alert sees them (pending for its 5m), for
    each exporter in the job named in the rules."""
    alerts = stack.prometheus.get("/api/v1/alerts")["alerts"]
    long_running = [a for a in alerts if a["labels"]["alertname"] == "NSMLRunInProgressTooLong"]
    assert {a["labels"]["instance"] for a in long_running} == set(stack.exporters)
    assert {a["labels"]["job"] for a in long_running} == {JOB}
    assert {a["state"] for a in long_running} <= {"pending", "firing"}
    assert all(float(a["value"]) > 86400 for a in long_running)
    quiet = {"NSMLApiDown", "NSMLExporterDown", "NSMLExporterAbsent", "NSMLRunSeriesOmitted"}
    assert not quiet & {a["labels"]["alertname"] for a in alerts}
