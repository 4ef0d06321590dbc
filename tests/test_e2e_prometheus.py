"""End to end: a real Prometheus scrapes a real exporter process (demo mode: the exporter talks
over HTTP to its NSML simulator) every second, with the shipped alert rules loaded. Every
dashboard query, with template variables filled as Grafana fills them, must parse and return
data; every alert rule must evaluate cleanly."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import ExporterProcess, free_port, require_binary

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "grafana" / "nsml-exporter.json").read_text())
RULES = ROOT / "prometheus" / "nsml-exporter.rules.yml"
SCRAPE_INTERVAL = 1


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + path, params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if isinstance(data["result"], list) else [data["result"]]

    def query_range(self, expr: str, seconds: int = 15) -> list[dict[str, Any]]:
        end = time.time()
        data = self.get(
            "/api/v1/query_range", query=expr, start=end - seconds, end=end, step=SCRAPE_INTERVAL
        )
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, str]]:
    prometheus_bin = require_binary("prometheus")
    from tests.conftest import start_exporter

    tmp = tmp_path_factory.mktemp("e2e")
    exporter: ExporterProcess = start_exporter(tmp, ["--demo"])
    target = exporter.url.removeprefix("http://")
    port = free_port()
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL}s",
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "nsml-exporter", "static_configs": [{"targets": [target]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException, AssertionError, LookupError):
                if len(prometheus.query_range('nsml_up{job="nsml-exporter"}')[0]["values"]) >= 8:
                    break
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()
            time.sleep(0.5)
        else:
            raise AssertionError(
                "Prometheus never collected 8 scrapes:\n" + (tmp / "prometheus.log").read_text()
            )
        yield prometheus, target
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        exporter.stop()


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def fill(expr: str, project: str, status: str) -> str:
    """Template variables as Grafana substitutes them for Prometheus."""
    return (
        expr.replace("$__rate_interval", f"{4 * SCRAPE_INTERVAL}s")
        .replace("$project", project)
        .replace("$status", status)
    )


def test_the_target_is_up_and_healthy(stack: tuple[Prometheus, str]) -> None:
    prometheus, target = stack
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert [(t["labels"]["instance"], t["health"]) for t in targets] == [(target, "up")]
    assert float(prometheus.query("nsml_up")[0]["value"][1]) == 1


def test_template_variables_find_values(stack: tuple[Prometheus, str]) -> None:
    prometheus, _ = stack
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    for name in ("project", "status"):
        definition = variables[name]["definition"]
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", definition).groups()  # type: ignore[union-attr]
        values = prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert values, definition
    projects = prometheus.get("/api/v1/label/project/values", **{"match[]": "nsml_runs"})
    assert "음성인식-팀" in projects


@pytest.mark.parametrize("selection", ["all", "one project"])
@pytest.mark.parametrize("panel", panels(), ids=lambda p: p["title"])
def test_every_dashboard_panel_returns_data(
    stack: tuple[Prometheus, str], panel: dict[str, Any], selection: str
) -> None:
    prometheus, _ = stack
    project, status = ".*", ".*"
    if selection == "one project":
        project, status = "vision-research", "RUN_STATE_IN_PROGRESS|RUN_STATE_COMPLETED"
    assert panel["fieldConfig"]["defaults"].get("unit"), "every panel has a unit"
    for target in panel["targets"]:
        expr = fill(target["expr"], project, status)
        assert "$" not in expr, expr
        instant = target.get("instant", False)
        result = prometheus.query(expr) if instant else prometheus.query_range(expr)
        assert result, f"{panel['title']}: no data for {expr}"


def test_every_alert_rule_evaluates_cleanly(stack: tuple[Prometheus, str]) -> None:
    prometheus, _ = stack
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    source = yaml.safe_load(RULES.read_text())
    assert {r["name"] for r in rules} == {r["alert"] for g in source["groups"] for r in g["rules"]}
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule["lastEvaluation"] != "0001-01-01T00:00:00Z", rule
        prometheus.query(rule["query"])  # parses as a query too


def test_long_running_demo_runs_make_the_alert_pending(stack: tuple[Prometheus, str]) -> None:
    """The demo has notebooks running for days: the alert sees them (pending for its 5m)."""
    prometheus, _ = stack
    alerts = prometheus.get("/api/v1/alerts")["alerts"]
    long_running = [a for a in alerts if a["labels"]["alertname"] == "NSMLRunInProgressTooLong"]
    assert long_running
    assert {a["state"] for a in long_running} <= {"pending", "firing"}
    assert all(float(a["value"]) > 86400 for a in long_running)
    quiet = {"NSMLApiDown", "NSMLExporterDown", "NSMLExporterAbsent", "NSMLRunSeriesOmitted"}
    assert not quiet & {a["labels"]["alertname"] for a in alerts}
