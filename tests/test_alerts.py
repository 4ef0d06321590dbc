"""Alert rules: checked and unit-tested with promtool 2.42 and 3.x (each alert firing and not
firing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.helpers.binaries import PrometheusRelease

RULES = Path(__file__).resolve().parent.parent / "prometheus"


def promtool(
    release: PrometheusRelease, *args: str, cwd: Path = RULES
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [release.promtool, *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_rules_pass_promtool_check(release: PrometheusRelease) -> None:
    result = promtool(release, "check", "rules", "nsml-exporter.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_rule_unit_tests_pass(release: PrometheusRelease) -> None:
    result = promtool(release, "test", "rules", "nsml-exporter.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = yaml.safe_load((RULES / "nsml-exporter.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((RULES / "nsml-exporter.rules.test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert alerts == firing == quiet


def unit_tests_for_job(job: str) -> str:
    """The unit tests, with the exporter's scrape job called `job`."""
    text = (RULES / "nsml-exporter.rules.test.yml").read_text()
    for old, new in (
        ('job="nsml-exporter"', f'job="{job}"'),
        ("job: nsml-exporter", f"job: {job}"),
        ("(job nsml-exporter)", f"(job {job})"),
    ):
        text = text.replace(old, new)
    return text


def test_the_job_is_named_in_one_place_and_any_job_name_works(
    release: PrometheusRelease, tmp_path: Path
) -> None:
    rules = (RULES / "nsml-exporter.rules.yml").read_text()
    exprs = [r["expr"] for g in yaml.safe_load(rules)["groups"] for r in g["rules"]]
    assert [e for e in exprs if "job=" in e] == ['up{job="nsml-exporter"}']
    (tmp_path / "nsml-exporter.rules.yml").write_text(
        rules.replace('up{job="nsml-exporter"}', 'up{job="nsml-prod"}')
    )
    (tmp_path / "t.yml").write_text(unit_tests_for_job("nsml-prod"))
    result = promtool(release, "test", "rules", "t.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Left at the default, the rules see nothing of a job named otherwise: the tests fail.
    (tmp_path / "nsml-exporter.rules.yml").write_text(rules)
    assert promtool(release, "test", "rules", "t.yml", cwd=tmp_path).returncode != 0


def test_a_broken_rule_unit_test_fails(release: PrometheusRelease, tmp_path: Path) -> None:
    """The unit tests can fail: expecting the exporter-down alert too early must not pass."""
    (tmp_path / "nsml-exporter.rules.yml").write_text(
        (RULES / "nsml-exporter.rules.yml").read_text()
    )
    (tmp_path / "t.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["nsml-exporter.rules.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": 'up{job="nsml-exporter", instance="a"}', "values": "0x10"}
                        ],
                        "alert_rule_test": [
                            {
                                "eval_time": "2m",
                                "alertname": "NSMLExporterDown",
                                "exp_alerts": [
                                    {
                                        "exp_labels": {
                                            "severity": "warning",
                                            "job": "nsml-exporter",
                                            "instance": "a",
                                        }
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    result = promtool(release, "test", "rules", "t.yml", cwd=tmp_path)
    assert result.returncode != 0
