"""TLS, client certificates and basic auth from a web-config file; secrets kept out of output.

Certificates are made in the test (no private key is checked in) and real HTTPS clients connect.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import yaml

from exporter.demo.simulator import SimulatorServer
from tests.fake_api import Fault
from tests.helpers.process import ExporterProcess, exporter_args_for, exporter_env, run_cli
from tests.helpers.runs import sim_run
from tests.helpers.settings import ACCESS, SECRET

pytestmark = pytest.mark.process  # every test here starts the exporter or its CLI


def web_config(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def tls_config(pki: dict[str, Path], **extra: Any) -> dict[str, Any]:
    return {
        "tls_server_config": {
            "cert_file": str(pki["server_crt"]),
            "key_file": str(pki["server_key"]),
            **extra,
        }
    }


@pytest.fixture
def populated(simulator: SimulatorServer) -> SimulatorServer:
    simulator.sim.set_runs([sim_run("p1", "1", "RUN_STATE_IN_PROGRESS", created=1.7e9)])
    return simulator


def test_tls_serves_https_and_refuses_plain_http(
    tmp_path: Path,
    pki: dict[str, Path],
    populated: SimulatorServer,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    config = web_config(tmp_path, tls_config(pki))
    exporter = exporter_factory(
        *exporter_args_for(populated, "--web-config-file", config),
        env=exporter_env(),
        scheme="https",
        verify=str(pki["ca"]),
    )
    response = exporter.get()
    assert response.status_code == 200 and "nsml_up 1.0" in response.text
    # Plain HTTP to the TLS port: a 400 that says why, and no metrics.
    plain = requests.get(exporter.url.replace("https://", "http://") + "/metrics", timeout=5)
    assert plain.status_code == 400
    assert "HTTPS" in plain.text and "nsml_up" not in plain.text
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(exporter.url + "/metrics", timeout=5)  # untrusted without the CA


def _client_context(
    pki: dict[str, Path], *, version: ssl.TLSVersion | None = None, cert: bool = False
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if cert:
        context.load_cert_chain(str(pki["client_crt"]), str(pki["client_key"]))
    return context


def _https_get(url: str, context: ssl.SSLContext) -> int:
    import urllib.request

    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        status: int = response.status
        return status


def test_minimum_tls_version_is_enforced(
    tmp_path: Path,
    pki: dict[str, Path],
    populated: SimulatorServer,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    config = web_config(tmp_path, tls_config(pki, min_version="TLS13"))
    exporter = exporter_factory(
        *exporter_args_for(populated, "--web-config-file", config),
        env=exporter_env(),
        scheme="https",
        verify=str(pki["ca"]),
    )
    url = exporter.url + "/healthz"
    assert _https_get(url, _client_context(pki, version=ssl.TLSVersion.TLSv1_3)) == 200
    with pytest.raises(OSError):  # ssl.SSLError, or URLError wrapping it
        _https_get(url, _client_context(pki, version=ssl.TLSVersion.TLSv1_2))


def test_client_certificates_are_required_and_verified(
    tmp_path: Path,
    pki: dict[str, Path],
    populated: SimulatorServer,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    config = web_config(
        tmp_path,
        tls_config(
            pki, client_ca_file=str(pki["ca"]), client_auth_type="RequireAndVerifyClientCert"
        ),
    )
    # Even /healthz needs a client certificate here: the TLS handshake comes first.
    from tests.helpers.process import start_exporter

    exporter = start_exporter(
        tmp_path,
        exporter_args_for(populated, "--web-config-file", config),
        env=exporter_env(),
        scheme="https",
        verify=str(pki["ca"]),
        cert=(str(pki["client_crt"]), str(pki["client_key"])),
    )
    try:
        url = exporter.url + "/metrics"
        assert _https_get(url, _client_context(pki, cert=True)) == 200
        with pytest.raises(OSError):
            _https_get(url, _client_context(pki, cert=False))
    finally:
        exporter.stop()


def test_basic_auth_protects_everything_but_healthz(
    tmp_path: Path,
    pki: dict[str, Path],
    populated: SimulatorServer,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    hashed = bcrypt.hashpw(b"s3cret pass", bcrypt.gensalt(rounds=4)).decode()
    config = web_config(tmp_path, {**tls_config(pki), "basic_auth_users": {"prom": hashed}})
    exporter = exporter_factory(
        *exporter_args_for(populated, "--web-config-file", config),
        env=exporter_env(),
        scheme="https",
        verify=str(pki["ca"]),
    )
    url = exporter.url
    for path in ("/metrics", "/"):
        denied = requests.get(url + path, verify=str(pki["ca"]), timeout=5)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith('Basic realm="nsml-exporter"')
        wrong = requests.get(url + path, auth=("prom", "guess"), verify=str(pki["ca"]), timeout=5)
        assert wrong.status_code == 401
        nobody = requests.get(
            url + path, auth=("root", "s3cret pass"), verify=str(pki["ca"]), timeout=5
        )
        assert nobody.status_code == 401
        good = requests.get(
            url + path, auth=("prom", "s3cret pass"), verify=str(pki["ca"]), timeout=5
        )
        assert good.status_code == 200
    assert "nsml_up 1.0" in good.text or "NSML Exporter" in good.text
    health = requests.get(url + "/healthz", verify=str(pki["ca"]), timeout=5)
    assert (health.status_code, health.text) == (200, "ok\n")


@pytest.mark.parametrize(
    ("config", "line", "problem"),
    [
        ("tls_server_config: [", 1, "cannot read it as YAML"),
        ("tls_server_config:\n  cert_file: {crt}\n", 1, "needs both cert_file and key_file"),
        (
            "tls_server_config:\n  cert_file: /nope.crt\n  key_file: {key}\n",
            2,
            "tls_server_config.cert_file: no such file /nope.crt",
        ),
        ("tls_server_config:\n  cert_file: {key}\n  key_file: {key}\n", 2, "cannot load cert_file"),
        (
            "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS9\n",
            4,
            "min_version must be one of",
        ),
        (
            "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            4,
            "needs tls_server_config.client_ca_file",
        ),
        (
            "# users\nbasic_auth_users:\n  prom: plaintext\n",
            3,
            "basic_auth_users.prom is not a bcrypt hash",
        ),
        ("basic_auth_user:\n  prom: x\n", 1, "basic_auth_user is not supported"),
    ],
)
def test_invalid_web_config_exits_2_with_one_line(
    tmp_path: Path, pki: dict[str, Path], config: str, line: int, problem: str
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(config.format(crt=pki["server_crt"], key=pki["server_key"]))
    result = run_cli(
        "--web-config-file",
        str(path),
        "--access-key",
        "a",
        env={"NSML_EXPORTER_SECRET_KEY": SECRET},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nsml-exporter: invalid setting NSML_EXPORTER_WEB_CONFIG_FILE")
    assert f"{path}, line {line}: " in lines[0]  # the file and the line to look at
    assert problem in lines[0]
    assert SECRET not in result.stderr


def test_keys_from_a_mounted_secrets_dir(
    tmp_path: Path,
    populated: SimulatorServer,
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "access-key").write_text(ACCESS)
    (secrets / "secret-key").write_text(SECRET + "\n")  # kubectl-made files may end in newline
    exporter = exporter_factory("--base-url", populated.base_url, "--secrets-dir", str(secrets))
    assert "nsml_up 1.0" in exporter.get().text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_or_signature_in_any_output_at_debug_level(
    populated: SimulatorServer,
    exporter_factory: Callable[..., ExporterProcess],
    log_format: str,
) -> None:
    sim = populated.sim
    sim.api_key = "gw-key-also-secret"
    exporter = exporter_factory(
        *exporter_args_for(
            populated,
            "--log-level",
            "debug",
            "--log-format",
            log_format,
            "--api-key",
            "gw-key-also-secret",
            "--retries",
            "1",
        ),
        env=exporter_env(),
    )
    outputs = [exporter.get().text]
    for fault in (
        Fault("status", status=503),
        Fault("status", status=429, retry_after="0"),
        Fault("truncated"),
        Fault("ignore_page"),
    ):
        sim.fault = fault
        outputs.append(exporter.get().text)
    sim.fault = None
    sim.secret_key = "rotated"  # the exporter's signatures now fail: 401 paths log too
    outputs.append(exporter.get().text)
    sim.secret_key = SECRET
    once = run_cli(
        "--once",
        *exporter_args_for(populated, "--log-level", "debug", "--api-key", "gw-key-also-secret"),
        env=exporter_env(),
    )
    everything = "\n".join([*outputs, exporter.logs(), once.stdout, once.stderr])
    assert "DEBUG" in everything or '"level": "debug"' in everything  # it really was verbose
    assert len(sim.signatures) > 5
    for secret in (SECRET, "gw-key-also-secret", *sim.signatures):
        assert secret not in everything
