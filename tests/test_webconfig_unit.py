"""Basic auth and the web-config file, as units: what the README promises about them."""

from __future__ import annotations

import base64
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.errors import ConfigError
from exporter.web import webconfig
from exporter.web.webconfig import BasicAuth


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", checkpw)
    return calls


def test_a_verified_password_is_not_bcrypted_again(counted: list[bytes]) -> None:
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    assert auth.check(header("prom", "pw"))
    assert auth.check(header("prom", "pw"))
    assert len(counted) == 1
    # A wrong password is checked with bcrypt every time, and refused.
    assert not auth.check(header("prom", "nope"))
    assert not auth.check(header("prom", "nope"))
    assert len(counted) == 3


def test_an_unknown_user_still_costs_a_bcrypt_check(counted: list[bytes]) -> None:
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    assert not auth.check(header("mallory", "pw"))
    assert len(counted) == 1


@pytest.mark.parametrize(
    "value", [None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()]
)
def test_malformed_authorization_is_refused(value: str | None) -> None:
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    assert not auth.check(value)


# -- boundaries and every value of each setting (issue 17's surviving one-line bugs) ----------


def test_an_unknown_user_is_checked_against_the_highest_configured_cost(
    counted: list[bytes],
) -> None:
    """Bug caught: the dummy hash at bcrypt's default cost 12 instead of the users' highest."""
    auth = BasicAuth(
        {
            "a": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)),
            "b": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)),
        }
    )
    assert not auth.check(header("mallory", "pw"))
    assert [hashed.split(b"$")[2] for hashed in counted] == [b"05"]


@pytest.mark.parametrize(("length", "accepted"), [(71, True), (72, True), (73, False)])
def test_passwords_up_to_72_bytes_are_checked_and_longer_ones_refused(
    length: int, accepted: bool
) -> None:
    """Bug caught: `>=` for `>` at bcrypt's 72-byte limit. A 73-byte password whose first 72
    bytes are right must not pass: bcrypt would see only those."""
    password = "p" * length
    hashed = bcrypt.hashpw(password[:72].encode(), bcrypt.gensalt(rounds=4))
    auth = BasicAuth({"prom": hashed})
    assert auth.check(header("prom", password)) is accepted


def test_a_check_that_cannot_get_a_slot_within_its_wait_is_refused_busy() -> None:
    """Bug caught: `acquire()` without its timeout (a flood would queue forever)."""
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))}, slots=1, wait=0.2)
    release = threading.Event()
    real = bcrypt.checkpw
    entered = threading.Event()

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        entered.set()
        release.wait(5)
        return real(password, hashed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webconfig.bcrypt, "checkpw", slow_checkpw)
        blocked = threading.Thread(target=auth.check, args=(header("prom", "wrong"),))
        blocked.start()
        assert entered.wait(5)
        with pytest.raises(webconfig.AuthBusy):
            auth.check(header("prom", "other-wrong"))  # without the timeout: waits for ever
        assert blocked.is_alive()  # refused while the slot is still held, not once it is freed
        release.set()
        blocked.join(5)


@pytest.mark.parametrize(
    "value",
    [
        "Basic " + base64.b64encode(b"prom:pw").decode() + "!!",
        "Basic *" + base64.b64encode(b"prom:pw").decode(),
        "Basic " + base64.b64encode(b"prom:pw").decode().rstrip("=") + " x",
    ],
)
def test_base64_with_stray_characters_is_refused(value: str) -> None:
    """Bug caught: `validate=False`, which drops the stray characters and lets `prom:pw` in."""
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    assert auth.check("Basic " + base64.b64encode(b"prom:pw").decode())  # the clean one passes
    assert not auth.check(value)


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_the_scheme_is_case_insensitive(scheme: str) -> None:
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    assert auth.check(f"{scheme} " + base64.b64encode(b"prom:pw").decode())


# -- the file -------------------------------------------------------------------------------


@pytest.fixture
def pem(pki: dict[str, Path], tmp_path: Path) -> Path:
    """A folder holding a server certificate, its key and the CA, by bare names."""
    folder = tmp_path / "conf"
    folder.mkdir()
    for name in ("server_crt", "server_key", "ca"):
        (folder / f"{name}.pem").write_bytes(pki[name].read_bytes())
    return folder


def load(folder: Path, tls: dict[str, Any]) -> webconfig.WebConfig:
    path = folder / "web.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "server_crt.pem",
                    "key_file": "server_key.pem",
                    **tls,
                }
            }
        )
    )
    return webconfig.load_web_config(path)


def test_relative_paths_are_read_from_the_files_folder_not_the_working_directory(
    pem: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug caught: relative paths resolved against the working directory."""
    monkeypatch.chdir("/")
    assert load(pem, {}).ssl_context is not None


def test_an_unsupported_tls_key_is_an_error_naming_it(pem: Path) -> None:
    """Bug caught: unknown `tls_server_config` keys ignored (a cipher list that does nothing)."""
    with pytest.raises(ConfigError, match=r"tls_server_config\.cipher_suites is not supported"):
        load(pem, {"cipher_suites": ["TLS_AES_128_GCM_SHA256"]})


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("name", ["TLS10", "TLS11", "TLS12", "TLS13"])
def test_each_max_version_sets_the_maximum(pem: Path, name: str) -> None:
    """Bug caught: `max_version` setting the minimum."""
    context = load(pem, {"min_version": "TLS10", "max_version": name}).ssl_context
    assert context is not None
    assert context.maximum_version == webconfig.TLS_VERSIONS[name]
    assert context.minimum_version == ssl.TLSVersion.TLSv1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("name", ["TLS10", "TLS11", "TLS12", "TLS13"])
def test_each_min_version_sets_the_minimum(pem: Path, name: str) -> None:
    context = load(pem, {"min_version": name}).ssl_context
    assert context is not None
    assert context.minimum_version == webconfig.TLS_VERSIONS[name]


def test_min_version_defaults_to_tls12(pem: Path) -> None:
    context = load(pem, {}).ssl_context
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("mode", "verify"),
    [
        ("NoClientCert", ssl.CERT_NONE),
        ("RequestClientCert", ssl.CERT_OPTIONAL),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_each_client_auth_type_gives_its_verify_mode(
    pem: Path, mode: str, verify: ssl.VerifyMode
) -> None:
    """Bug caught: any one of the five mapped to another mode (`VerifyClientCertIfGiven` to
    `CERT_NONE` would accept any certificate)."""
    context = load(pem, {"client_auth_type": mode, "client_ca_file": "ca.pem"}).ssl_context
    assert context is not None
    assert context.verify_mode == verify


def test_an_unknown_client_auth_type_is_an_error_naming_the_values(pem: Path) -> None:
    with pytest.raises(ConfigError, match="client_auth_type must be one of NoClientCert"):
        load(pem, {"client_auth_type": "RequireAndVerify"})


def test_user_names_do_not_leak_by_timing_when_costs_differ() -> None:
    """Issue 16 (4): alice at cost 10, bob at 12: an unknown user took 303 ms and alice's
    wrong password 78 ms (ratio 3.9). Every wrong password now takes as long as the costliest
    check. Scaled down: costs 6 and 9, medians of 5."""
    auth = BasicAuth(
        {
            "alice": bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=6)),
            "bob": bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=9)),
        }
    )

    def median_seconds(user: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert not auth.check(header(user, "wrong"))
            times.append(time.perf_counter() - started)
        return sorted(times)[2]

    unknown, alice, bob = median_seconds("mallory"), median_seconds("alice"), median_seconds("bob")
    assert 0.6 < unknown / alice < 1.6, (unknown, alice)
    assert 0.6 < unknown / bob < 1.6, (unknown, bob)


class Clock:
    """`time` for the auth module: bcrypt checks take what the test says; sleeps are noted."""

    def __init__(self, took: list[float]) -> None:
        self.took = took
        self.now = 0.0
        self.slept: list[float] = []
        self._started = False

    def perf_counter(self) -> float:
        if self._started:  # the end of a check: it took the next figure
            self.now += self.took.pop(0)
        self._started = not self._started
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_a_failed_check_lasts_the_median_of_the_recent_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bug caught: the padding of a failed check taken from the slowest recent check (or their
    mean): one check slowed by a busy moment, 2 s here, would make every wrong password wait
    2 s. Checks took 0.1, 0.1, 2.0, 0.1, 0.1, 0.1 s; the last five
    have a median of 0.1, so a wrong password whose check took 0.02 s waits 0.08 s more."""
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))})
    clock = Clock([0.1, 0.1, 2.0, 0.1, 0.1, 0.1, 0.02])
    monkeypatch.setattr(webconfig, "time", clock)
    for _ in range(6):
        assert not auth.check(header("prom", "wrong"))
    clock.slept.clear()
    assert not auth.check(header("mallory", "pw"))
    assert clock.slept == [pytest.approx(0.08)]


def test_an_unreadable_web_config_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug caught (issue 28): a web-config file in a folder the exporter's user may not read
    gave a `PermissionError` traceback and exit 1."""
    config = tmp_path / "web.yml"
    config.write_text("basic_auth_users: {}\n")

    def refused(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(ConfigError) as caught:
        webconfig.load_web_config(config)
    assert f"{config}: cannot read it (Permission denied)" in str(caught.value)


# -- a bad file, in process: the whole line the exporter prints ------------------------------
# (test_security runs a few of these through the command line: exit 2, one line on stderr)

BAD_FILES = [
    ("[1, 2]\n", "must be a YAML mapping"),
    (
        "tls_server_config:\n  cert_file: a\nbasic_auth_user:\n  prom: x\n",
        "line 3: basic_auth_user is not supported",
    ),
    ("zeta: 1\nalpha: 2\n", "line 2: alpha is not supported"),
    ("tls_server_config: [a]\n", "line 1: tls_server_config must be a mapping"),
    (
        "tls_server_config:\n  cert_file: {crt}\n  zz: 1\n  ciphers: x\n",
        "line 4: tls_server_config.ciphers is not supported",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n",
        "line 1: tls_server_config needs both cert_file and key_file",
    ),
    (
        "tls_server_config:\n  key_file: {key}\n",
        "line 1: tls_server_config needs both cert_file and key_file",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: ''\n",
        "line 1: tls_server_config needs both cert_file and key_file",
    ),
    (
        "tls_server_config:\n  cert_file: 7\n  key_file: {key}\n",
        "line 2: tls_server_config.cert_file must be a file path",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: [k]\n",
        "line 3: tls_server_config.key_file must be a file path",
    ),
    (
        "tls_server_config:\n  cert_file: /nope.crt\n  key_file: {key}\n",
        "line 2: tls_server_config.cert_file: no such file /nope.crt",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: nope.key\n",
        "line 3: tls_server_config.key_file: no such file {folder}/nope.key",
    ),
    (
        "tls_server_config:\n  cert_file: {folder}\n  key_file: {key}\n",
        "line 2: tls_server_config.cert_file: no such file {folder}",
    ),
    (
        "tls_server_config:\n  cert_file: {key}\n  key_file: {key}\n",
        "line 2: cannot load cert_file/key_file: ",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS9\n",
        "line 4: tls_server_config.min_version must be one of TLS10, TLS11, TLS12, TLS13",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  max_version: tls13\n",
        "line 4: tls_server_config.max_version must be one of TLS10, TLS11, TLS12, TLS13",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_auth_type: Any\n",
        "line 4: tls_server_config.client_auth_type must be one of NoClientCert, "
        "RequestClientCert, VerifyClientCertIfGiven, RequireAnyClientCert, "
        "RequireAndVerifyClientCert",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "line 4: client_auth_type RequireAndVerifyClientCert needs "
        "tls_server_config.client_ca_file",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n"
        "  client_auth_type: RequestClientCert\n",
        "line 4: client_auth_type RequestClientCert needs tls_server_config.client_ca_file",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_ca_file: {key}\n",
        "line 4: cannot load client_ca_file: ",
    ),
    (
        "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_ca_file: nope\n",
        "line 4: tls_server_config.client_ca_file: no such file {folder}/nope",
    ),
    (
        "basic_auth_users: [prom]\n",
        "line 1: basic_auth_users must be a mapping of user names to bcrypt hashes",
    ),
    (
        "# users\nbasic_auth_users:\n  prom: plaintext\n",
        "line 3: basic_auth_users.prom is not a bcrypt hash",
    ),
    (
        "basic_auth_users:\n  prom: $2b$04$abc\n  ann: 12\n",
        "line 3: basic_auth_users.ann is not a bcrypt hash",
    ),
    (
        "basic_auth_users:\n  prom: $2x$04$abc\n",
        "line 2: basic_auth_users.prom is not a bcrypt hash",
    ),
    (
        "a: [\n",
        "line 2: cannot read it as YAML (expected the node content, but found '<stream end>')",
    ),
    (
        "a: b\n\tc: d\n",
        "line 2: cannot read it as YAML (found character '\\t' that cannot start any token)",
    ),
]


@pytest.mark.parametrize(("text", "said"), BAD_FILES)
def test_a_bad_web_config_is_one_line_naming_the_file_its_line_and_the_problem(
    pki: dict[str, Path], tmp_path: Path, text: str, said: str
) -> None:
    """Bugs caught: a problem named by the wrong key, line or words; a check skipped (a
    client-auth mode that asks for certificates with no CA to verify them against, a user whose
    "hash" is a plain password); a key of the file silently ignored."""
    names = {"crt": pki["server_crt"], "key": pki["server_key"], "folder": tmp_path}
    path = tmp_path / "web.yml"
    path.write_text(text.format(**names))
    with pytest.raises(ConfigError) as caught:
        webconfig.load_web_config(path)
    setting = "NSML_EXPORTER_WEB_CONFIG_FILE (--web-config-file)"
    where = ", " if said.startswith("line ") else ": "
    expected = f"invalid setting {setting}: {path}{where}{said.format(**names)}"
    if said.endswith(": "):  # OpenSSL's reason for refusing a file: its words, not ours
        assert str(caught.value).startswith(expected)
        assert not str(caught.value).endswith(": None")
    else:
        assert str(caught.value) == expected


def test_every_bcrypt_prefix_is_taken_and_each_user_checked(tmp_path: Path) -> None:
    """Bugs caught: a `$2a$` or `$2y$` hash (htpasswd and older tools write them) refused, or
    the users' hashes not kept (every login refused)."""
    path = tmp_path / "web.yml"
    users = {}
    for user, prefix in (("ann", b"$2a$"), ("bob", b"$2b$"), ("cy", b"$2y$")):
        hashed = bcrypt.hashpw(user.encode(), bcrypt.gensalt(rounds=4, prefix=b"2b"))
        users[user] = (prefix + hashed[4:]).decode()
    path.write_text(yaml.safe_dump({"basic_auth_users": users}))
    auth = webconfig.load_web_config(path).auth
    assert auth is not None
    assert sorted(auth.users) == ["ann", "bob", "cy"]
    for user in ("ann", "bob", "cy"):
        assert auth.check(header(user, user))
    assert not auth.check(header("ann", "bob"))


def test_a_password_may_hold_colons_and_spaces_may_pad_the_scheme() -> None:
    """Bugs caught (RFC 7617): the user-id split at the password's colon (`a:b:c` is user
    `a`, password `b:c`), two spaces after `Basic` refused; a credential without a colon
    taken as a user with an empty password."""
    auth = BasicAuth({"prom": bcrypt.hashpw(b"p:w d", bcrypt.gensalt(rounds=4))})
    assert BasicAuth.credentials(header("prom", "p:w d")) == ("prom", b"p:w d")
    assert auth.check(header("prom", "p:w d"))
    assert auth.check(header("prom", "p:w d").replace("Basic ", "Basic  "))
    assert BasicAuth.credentials("Basic " + base64.b64encode(b"no-colon").decode()) is None


def test_a_first_check_at_a_lower_cost_fails_without_error() -> None:
    """Bug caught: the window of recent check times at the highest cost started empty: a wrong
    password for a cheaper user, before any check at the highest cost, raised (a 500)."""
    auth = BasicAuth(
        {
            "cheap": bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)),
            "dear": bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=5)),
        }
    )
    assert not auth.check(header("cheap", "wrong"))


def test_tls_defaults_allow_tls13_and_serve_as_a_server(pem: Path) -> None:
    """Bugs caught: `max_version` defaulting to TLS 1.2 (no TLS 1.3 for anyone), or a context
    made for a client."""
    context = load(pem, {}).ssl_context
    assert context is not None
    assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER


def test_a_yaml_error_without_a_place_is_said_by_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug caught: a YAML error that carries no line or problem (PyYAML's plain `YAMLError`)
    failing the start with a traceback instead of one line."""
    path = tmp_path / "web.yml"
    path.write_text("a: b\n")

    def broken(text: str) -> None:
        raise yaml.YAMLError("no mark")

    monkeypatch.setattr(webconfig.yaml, "safe_load", broken)
    with pytest.raises(ConfigError) as caught:
        webconfig.load_web_config(path)
    assert str(caught.value) == (
        f"invalid setting NSML_EXPORTER_WEB_CONFIG_FILE (--web-config-file): {path}: "
        "cannot read it as YAML (YAMLError)"
    )
