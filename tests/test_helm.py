"""The Helm chart, linted and rendered with real Helm (helm-python-sdk) and validated with
kubernetes-validate. No cluster is involved: that is the limit of what can be checked here."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in the [test] extras")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from exporter.settings import Settings  # noqa: E402
from tests.helpers.binaries import PrometheusRelease  # noqa: E402
from tests.helpers.settings import settings_from  # noqa: E402
from tests.test_alerts import unit_tests_for_job  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "nsml-exporter"
CI_SECRET = "SK-ci-secret-must-stay-in-the-secret"
CORE_KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "NetworkPolicy",
    "Pod",
}
KUBERNETES = "1.30.0"

helm.disable_logging()


def ci_values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


#: The chart here is an unreleased checkout: it renders only with an image named.
BUILT = {"repository": "localhost/nsml-exporter", "tag": "0.2.0"}


def render(
    values: dict[str, Any] | None = None, image: dict[str, str] | None = BUILT
) -> dict[str, list[dict[str, Any]]]:
    """Rendered manifests by kind (NOTES.txt under 'NOTES'), with `image` unless the values
    name one."""
    values = dict(values or {})
    if image is not None:
        values["image"] = {**image, **values.get("image", {})}
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name="rel", namespace="monitoring", is_install=True)
    by_kind: dict[str, list[dict[str, Any]]] = {"NOTES": []}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            by_kind["NOTES"].append({"text": text})
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def only(docs: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    assert len(docs.get(kind, [])) == 1, f"expected one {kind}"
    return docs[kind][0]


@pytest.mark.parametrize("name", ["default", "full", "existing-secret"])
def test_chart_passes_strict_lint(name: str) -> None:
    report = helm.lint(str(CHART), ci_values(name), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_reports_a_broken_value() -> None:
    report = helm.lint(str(CHART), {"config": {"pageSize": "many"}}, strict=True)
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"])


@pytest.mark.parametrize("name", ["default", "full", "existing-secret"])
def test_every_core_manifest_is_valid_kubernetes(name: str) -> None:
    docs = render(ci_values(name))
    checked = 0
    for kind, items in docs.items():
        if kind not in CORE_KINDS:
            continue
        for doc in items:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            checked += 1
    assert checked >= 4


def test_defaults_render_the_basics_and_nothing_optional() -> None:
    docs = render()
    assert set(docs) == {"NOTES", "Deployment", "Service", "ServiceAccount", "Secret", "Pod"}
    assert "WARNING: no NSML keys are set" in docs["NOTES"][0]["text"]


def test_everything_on_renders_every_optional_object() -> None:
    docs = render(ci_values("full"))
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"):
        assert kind in docs
    monitor = only(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["basicAuth"]["password"]["name"] == "nsml-exporter-scrape-auth"
    container = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NSML_EXPORTER_WEB_CONFIG_FILE"] == "/etc/nsml-exporter/web/web-config.yml"


def test_the_secret_key_appears_only_in_the_secret() -> None:
    encoded = base64.b64encode(CI_SECRET.encode()).decode()
    docs = render(ci_values("full"))
    for kind, items in docs.items():
        for doc in items:
            text = json.dumps(doc)
            if kind == "Secret":
                assert encoded in text
            else:
                assert CI_SECRET not in text and encoded not in text, kind


def test_existing_secret_renders_no_secret_and_mounts_the_users() -> None:
    docs = render(ci_values("existing-secret"))
    assert "Secret" not in docs
    spec = only(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["nsml-keys"]["secret"]["secretName"] == "my-nsml-keys"
    annotations = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def test_keys_are_mounted_as_files_not_environment() -> None:
    container = only(render(ci_values("default")), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    names = {e["name"] for e in container["env"]}
    assert not names & {
        "NSML_EXPORTER_ACCESS_KEY",
        "NSML_EXPORTER_SECRET_KEY",
        "NSML_EXPORTER_API_KEY",
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/nsml-exporter/secrets"]["readOnly"] is True


def test_hardened_security_context() -> None:
    spec = only(render(ci_values("default")), "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]["securityContext"]
    assert container["runAsNonRoot"] is True
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False


def test_every_setting_is_a_config_value_the_exporter_accepts(tmp_path: Path) -> None:
    """The env the chart renders, fed to the exporter's own settings loader."""
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    by_key = {k: v for k, v in chart_defaults.items()}
    handled_elsewhere = {"access_key", "secret_key", "api_key", "secrets_dir"}
    snake = {"".join("_" + c.lower() if c.isupper() else c for c in k): k for k in by_key}
    assert set(snake) == set(Settings.model_fields) - handled_elsewhere
    for name in ("default", "full"):
        container = only(render(ci_values(name)), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        (tmp_path / "access-key").write_text("a")
        (tmp_path / "secret-key").write_text("s")
        env["NSML_EXPORTER_SECRETS_DIR"] = str(tmp_path)
        env.pop("NSML_EXPORTER_WEB_CONFIG_FILE", None)
        # The state file's folder is the pod's volume: checked below, not on this machine.
        state_file = env.pop("NSML_EXPORTER_STATE_FILE", None)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = settings_from()
        if name == "full":
            assert state_file == "/var/lib/nsml-exporter/store.json.gz"
            spec = only(render(ci_values(name)), "Deployment")["spec"]["template"]["spec"]
            mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert mounts["state"] == "/var/lib/nsml-exporter"
            claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
            assert claim == "nsml-exporter-state"
        else:
            assert not state_file  # config.stateFile: "" (off)
        if name == "full":
            assert settings.page_size == 500
            assert (settings.collection_mode, settings.read_rate) == ("background", 5)
            assert settings.projects == ["vision-research", "llm-pretrain"]
            assert settings.known_statuses[-1] == "RUN_STATE_FAILED"
        else:
            assert settings.page_size == 1000
            assert settings.collection_mode == "auto"
            assert settings.log_format == "json"
        assert settings.secret_key is not None
        assert settings.secret_key.get_secret_value() == "s"


@pytest.mark.parametrize(
    "values",
    [
        {"config": {"pageSize": "many"}},
        {"config": {"pageSise": 10}},
        {"config": {"firstPage": 2}},
        {"config": {"knownStatuses": "RUN_STATE_IN_PROGRESS"}},
        {"config": {"details": "yes"}},
        {"config": {"detailRequests": -1}},
        {"config": {"nodesRefresh": 0}},
        {"config": {"collectionMode": "lazy"}},
        {"config": {"readRate": 0}},
        {"serviceMonitor": {"enabled": "yes"}},
        {"prometheusRule": {"longRunningSeconds": "1d"}},
        {"nsml": {"secretKey": 12345}},
        {"image": {"pullPolicy": "Sometimes"}},
    ],
)
def test_schema_rejects_wrong_values(values: dict[str, Any]) -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmError):
        chart.render(values, name="rel", namespace="monitoring")


def test_dashboard_configmap_is_the_grafana_dashboard() -> None:
    configmap = only(render(ci_values("full")), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "grafana" / "nsml-exporter.json").read_text())
    assert json.loads(configmap["data"]["nsml-exporter.json"]) == shipped


def test_prometheus_rule_is_the_rules_file_for_the_charts_own_job(
    release: PrometheusRelease, tmp_path: Path
) -> None:
    """Rendered as release "rel": the ServiceMonitor's jobLabel makes the job "rel", and the
    rules' unit tests pass with that job (the long-running threshold left at its default)."""
    docs = render({**ci_values("full"), "prometheusRule": {"enabled": True}})
    assert only(docs, "ServiceMonitor")["spec"]["jobLabel"] == "app.kubernetes.io/instance"
    assert only(docs, "Service")["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
    rendered = only(docs, "PrometheusRule")["spec"]["groups"]
    source = yaml.safe_load((ROOT / "prometheus" / "nsml-exporter.rules.yml").read_text())
    names = [r.get("alert", r.get("record")) for r in rendered[0]["rules"]]
    assert names == [r.get("alert", r.get("record")) for r in source["groups"][0]["rules"]]
    assert rendered[0]["rules"][0]["expr"] == 'up{job="rel"}'
    (tmp_path / "nsml-exporter.rules.yml").write_text(yaml.safe_dump({"groups": rendered}))
    (tmp_path / "t.yml").write_text(unit_tests_for_job("rel"))
    result = subprocess.run(
        [release.promtool, "test", "rules", "t.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_takes_the_charts_threshold() -> None:
    rule = only(render(ci_values("full")), "PrometheusRule")
    rules = rule["spec"]["groups"][0]["rules"]
    long_running = next(r for r in rules if r.get("alert") == "NSMLRunInProgressTooLong")
    assert "> 43200" in long_running["expr"]


def test_chart_files_link_to_the_single_sources() -> None:
    for name, target in (
        ("nsml-exporter.json", ROOT / "grafana" / "nsml-exporter.json"),
        ("nsml-exporter.rules.yml", ROOT / "prometheus" / "nsml-exporter.rules.yml"),
    ):
        link = CHART / "files" / name
        assert link.is_symlink()
        assert link.resolve() == target.resolve()


# -- Prometheus Operator resources, checked against the Operator's own schemas ---------------

OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")


def operator_check(doc: dict[str, Any]) -> None:
    """Validate against monitoring.coreos.com/v1 (cloudcoil's pydantic models of the Operator's
    CRDs), and require that nothing is dropped on the way: a field the CRD does not know would be
    pruned by the API server, silently."""
    from cloudcoil.models.prometheus_operator import v1

    model = getattr(v1, doc["kind"]).model_validate(doc)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == doc


@pytest.mark.parametrize("name", ["full", "existing-secret"])
def test_operator_resources_pass_the_operators_schemas(name: str) -> None:
    values = ci_values(name)
    values.update(serviceMonitor={"enabled": True}, prometheusRule={"enabled": True})
    docs = render(values)
    for kind in OPERATOR_KINDS:
        operator_check(only(docs, kind))


@pytest.mark.parametrize(
    ("kind", "path", "wrong"),
    [
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "15 seconds"),
        ("ServiceMonitor", ("spec", "endpoints", 0, "scrapeTimeout"), "10"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 1, "for"), 5),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 1, "forr"), "5m"),
    ],
)
def test_a_wrong_operator_value_is_rejected(kind: str, path: tuple[Any, ...], wrong: Any) -> None:
    doc = only(render(ci_values("full")), kind)
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = wrong
    with pytest.raises((ValueError, AssertionError)):
        operator_check(doc)


def test_an_unreleased_chart_names_no_image_that_cannot_exist() -> None:
    """Bug caught (issue 28): `helm install` from the checkout asking for
    ghcr.io/nsml-exporter/nsml-exporter:0.1.0, an image no release publishes (the pod never
    pulls). The chart here refuses, saying what to set; with an image named it renders it."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"].endswith("-dev")
    with pytest.raises(Exception, match=r"unreleased checkout.*image\.tag"):
        render({"nsml": {"accessKey": "a", "secretKey": "b"}}, image=None)
    docs = render({"nsml": {"accessKey": "a", "secretKey": "b"}})
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/nsml-exporter:0.2.0"
    (notes,) = docs["NOTES"]
    assert "unreleased checkout: it runs localhost/nsml-exporter:0.2.0" in notes["text"]
