"""Every way Prometheus 2.42 and 3.x can scrape, each a job of one real Prometheus: the target is
up and Prometheus stores the names of the contract (under `dots`, those names escaped as the
escaping rules say). One of the jobs scrapes over TLS with a client certificate and basic auth.
And `promtool check metrics` of each version is clean on what /metrics serves."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.binaries import PrometheusRelease
from tests.helpers.process import ExporterProcess, start_exporter
from tests.prometheus_server import Prometheus, running_prometheus

PASSWORD = "scrape-password-0123"
PROTOCOLS = [
    "PrometheusProto",
    "PrometheusText0.0.4",
    "PrometheusText1.0.0",
    "OpenMetricsText0.0.1",
    "OpenMetricsText1.0.0",
]
ESCAPINGS = ["allow-utf-8", "underscores", "dots", "values"]


def jobs_for(major: int) -> dict[str, dict[str, Any]]:
    """Job name -> the job's settings beyond its target. Prometheus 2.42 has neither
    `scrape_protocols` (2.49) nor escaping (3.0): its default is its one way."""
    jobs: dict[str, dict[str, Any]] = {"default": {}}
    if major >= 3:
        for protocol in PROTOCOLS:
            jobs[f"protocol-{protocol}"] = {"scrape_protocols": [protocol]}
        for escaping in ESCAPINGS:
            jobs[f"escaping-{escaping}"] = {"metric_name_escaping_scheme": escaping}
        for escaping in ("underscores", "dots", "values"):  # allow-utf-8 needs utf8 validation
            jobs[f"legacy-{escaping}"] = {
                "metric_name_validation_scheme": "legacy",
                "metric_name_escaping_scheme": escaping,
            }
    return jobs


SUFFIXES = ("_bucket", "_gcount", "_gsum", "_count", "_sum", "_total", "_created", "_info")


def stored_name(name: str, job: str, families: frozenset[str] = frozenset()) -> str:
    """The name Prometheus stores for `name` in `job`: the dots scheme escapes every `_` of the
    family's name and keeps the sample's suffix (`nsml__run__duration__seconds_bucket`)."""
    if not job.endswith("-dots"):
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix).replace("_", "__") + suffix
    return name.replace("_", "__")


@dataclass
class Modes:
    prometheus: Prometheus
    plain: ExporterProcess
    jobs: list[str]


@pytest.fixture(scope="module")
def modes(
    release: PrometheusRelease,
    pki: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Modes]:
    tmp = tmp_path_factory.mktemp(f"modes-prometheus{release.major}")
    web = tmp / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": str(pki["server_crt"]),
                    "key_file": str(pki["server_key"]),
                    "client_ca_file": str(pki["ca"]),
                    "client_auth_type": "RequireAndVerifyClientCert",
                },
                "basic_auth_users": {"prom": hashed},
            }
        )
    )
    client_cert = (str(pki["client_crt"]), str(pki["client_key"]))
    plain = start_exporter(tmp, ["--demo"])
    secure = start_exporter(
        tmp,
        ["--demo", "--web-config-file", str(web)],
        scheme="https",
        verify=str(pki["ca"]),
        cert=client_cert,
    )
    jobs = jobs_for(release.major)
    scrape_configs: list[dict[str, Any]] = [
        {"job_name": name, "static_configs": [{"targets": [plain.url[7:]]}], **extra}
        for name, extra in jobs.items()
    ]
    scrape_configs.append(
        {
            "job_name": "tls-basic-auth",
            "scheme": "https",
            "tls_config": {
                "ca_file": str(pki["ca"]),
                "cert_file": client_cert[0],
                "key_file": client_cert[1],
            },
            "basic_auth": {"username": "prom", "password": PASSWORD},
            "static_configs": [{"targets": [secure.url[8:]]}],
        }
    )
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": scrape_configs,
    }
    names = [c["job_name"] for c in scrape_configs]

    def every_job_scraped_twice(prometheus: Prometheus) -> bool:
        scraped = prometheus.query_range("up", seconds=10)
        return len(scraped) == len(names) and min(len(s["values"]) for s in scraped) >= 2

    try:
        with running_prometheus(release, tmp, config, every_job_scraped_twice) as prometheus:
            yield Modes(prometheus, plain, names)
    finally:
        plain.stop()
        secure.stop()


def test_every_scrape_mode_gets_a_target_that_is_up(modes: Modes) -> None:
    health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in modes.prometheus.targets()}
    assert health == dict.fromkeys(modes.jobs, ("up", ""))
    up = {r["metric"]["job"]: r["value"][1] for r in modes.prometheus.query("up")}
    assert up == dict.fromkeys(modes.jobs, "1")


def test_every_scrape_mode_stores_the_contracts_names(modes: Modes) -> None:
    served = {
        sample.name
        for family in text_string_to_metric_families(modes.plain.get().text)
        for sample in family.samples
        if sample.name.startswith("nsml_")
    }
    assert {"nsml_up", "nsml_runs", "nsml_run_age_seconds", "nsml_api_reported_runs"} <= served
    openmetrics = modes.plain.get(headers={"Accept": "application/openmetrics-text"}).text
    families = frozenset(f.name for f in openmetrics_families(openmetrics))
    for job in modes.jobs:
        stored = {
            r["metric"]["__name__"]
            for r in modes.prometheus.query(f'group by (__name__) ({{job="{job}"}})')
            if r["metric"]["__name__"].startswith("nsml_")
        }
        assert stored == {stored_name(name, job, families) for name in served}, job
        nsml_up = modes.prometheus.query(f'{stored_name("nsml_up", job)}{{job="{job}"}}')
        assert [r["value"][1] for r in nsml_up] == ["1"], job
        ages = modes.prometheus.query(f'{stored_name("nsml_run_age_seconds", job)}{{job="{job}"}}')
        assert ages, job
        assert all(stored_name("project_id", job) in r["metric"] for r in ages), job


@pytest.mark.parametrize(
    "accept",
    ["text/plain;version=0.0.4", "text/plain;version=1.0.0;escaping=underscores"],
)
def test_promtool_check_metrics_is_clean(
    release: PrometheusRelease, modes: Modes, accept: str
) -> None:
    """promtool reads the text format: both of its versions, as the exporter serves them."""
    response = modes.plain.get(headers={"Accept": accept})
    assert response.status_code == 200
    assert "nsml_run_duration_seconds_bucket" in response.text  # the histograms are linted too
    result = subprocess.run(
        [release.promtool, "check", "metrics"],
        input=response.text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
