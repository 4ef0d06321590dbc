"""TLS and basic auth from a Prometheus exporter-toolkit web-config file.

Supported: `tls_server_config` (`cert_file`, `key_file`, `client_ca_file`, `client_auth_type`,
`min_version`, `max_version`) and `basic_auth_users` (user: bcrypt hash). Relative paths are
resolved against the file's folder, as exporter-toolkit does. Anything else is an error rather
than silently ignored: a security setting that does nothing is worse than none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import ssl
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from ..errors import ConfigError
from ..settings import setting_label

SETTING = setting_label("web_config_file")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
}
#: bcrypt reads at most 72 bytes of a password; bcrypt 5 refuses longer ones outright.
BCRYPT_MAX_PASSWORD = 72


def _cost(hashed: bytes) -> int:
    """The cost of a `$2b$12$...` hash."""
    try:
        return int(hashed.split(b"$")[2])
    except (IndexError, ValueError):
        return 10


class AuthBusy(Exception):
    """Too many password checks are running: refuse rather than queue (answered 429)."""


@dataclass
class BasicAuth:
    """Checks `Authorization: Basic ...` against bcrypt hashes.

    - A verified (user, password) pair is remembered as a SHA-256 digest, so a Prometheus
      scraping every few seconds costs no bcrypt after the first scrape, and never waits behind
      the checks of other clients.
    - An unknown user is checked against a dummy hash of the highest configured cost, and a
      failed check of a cheaper hash is made to last as long as one at that cost: a wrong
      password takes the same time whoever the user, so user names do not leak by timing.
    - At most `slots` bcrypt checks run at once (by default half the cores, at least one); a
      request that would wait longer than `wait` seconds for one is refused with `AuthBusy`.
    """

    users: dict[str, bytes]
    slots: int = max(1, (os.cpu_count() or 2) // 2)
    wait: float = 1.0
    _verified: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._cost = max((_cost(hashed) for hashed in self.users.values()), default=10)
        started = time.perf_counter()
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=self._cost))
        #: How long the latest checks at the highest cost took: their median is what a failed
        #: check lasts (a median, so that one slow check does not slow every failure).
        self._costliest: deque[float] = deque([time.perf_counter() - started], maxlen=5)
        self._checks = threading.BoundedSemaphore(self.slots)

    @staticmethod
    def credentials(header: str | None) -> tuple[str, bytes] | None:
        """(user, password) from `Basic <base64>` (scheme case-insensitive, RFC 7617)."""
        scheme, _, encoded = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:  # not base64, not ASCII, not UTF-8 (binascii.Error and
            return None  # UnicodeDecodeError are ValueErrors)
        user, sep, password = decoded.partition(":")
        return (user, password.encode()) if sep else None

    def check(self, header: str | None) -> bool:
        """True for a known user's right password; raises `AuthBusy` under a flood."""
        found = self.credentials(header)
        if found is None:
            return False
        user, password = found
        digest = hashlib.sha256(user.encode() + b"\0" + password).digest()
        with self._lock:
            known = self._verified.get(user)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        hashed = self.users.get(user)
        # A password bcrypt cannot take never matches, but costs a check like any wrong one.
        if hashed is None or len(password) > BCRYPT_MAX_PASSWORD:
            hashed = self._dummy
        if not self._checks.acquire(timeout=self.wait):
            raise AuthBusy("too many password checks at once")
        started = time.perf_counter()
        try:
            matched = bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
        finally:
            self._checks.release()
        took = time.perf_counter() - started
        with self._lock:
            if _cost(hashed) == self._cost:
                self._costliest.append(took)
            slowest = statistics.median(self._costliest)
        if not matched or hashed is self._dummy:
            time.sleep(max(0.0, slowest - took))  # no slot held while it waits
            return False
        with self._lock:
            self._verified[user] = digest
        return True


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None


class _Problem(Exception):
    """What is wrong, and at which key (`tls_server_config.cert_file`), to find its line."""

    def __init__(self, problem: str, key: str = "") -> None:
        super().__init__(problem)
        self.key = key


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of every key two levels deep: `tls_server_config`, `...cert_file`."""
    lines: dict[str, int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        lines[str(key.value)] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for inner, _ in value.value:
                lines[f"{key.value}.{inner.value}"] = inner.start_mark.line + 1
    return lines


def _path(base: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise _Problem(f"{key} must be a file path", key)
    path = base / value  # an absolute `value` stays itself
    if not path.is_file():
        raise _Problem(f"{key}: no such file {path}", key)
    return path


def _tls(base: Path, tls: Any) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise _Problem("tls_server_config must be a mapping", "tls_server_config")
    unknown = set(tls) - TLS_KEYS
    if unknown:
        key = f"tls_server_config.{sorted(unknown)[0]}"
        raise _Problem(f"{key} is not supported", key)
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise _Problem("tls_server_config needs both cert_file and key_file", "tls_server_config")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        name = tls.get(key, "TLS12" if key == "min_version" else None)
        if name is None:
            continue
        if name not in TLS_VERSIONS:
            raise _Problem(
                f"tls_server_config.{key} must be one of {', '.join(TLS_VERSIONS)}",
                f"tls_server_config.{key}",
            )
        setattr(context, attribute, TLS_VERSIONS[name])
    try:
        context.load_cert_chain(
            _path(base, tls["cert_file"], "tls_server_config.cert_file"),
            _path(base, tls["key_file"], "tls_server_config.key_file"),
        )
    except ssl.SSLError as error:
        raise _Problem(
            f"cannot load cert_file/key_file: {error.reason or error}",
            "tls_server_config.cert_file",
        ) from None
    mode = tls.get("client_auth_type", "NoClientCert")
    if mode not in CLIENT_AUTH:
        raise _Problem(
            f"tls_server_config.client_auth_type must be one of {', '.join(CLIENT_AUTH)}",
            "tls_server_config.client_auth_type",
        )
    context.verify_mode = CLIENT_AUTH[mode]
    if tls.get("client_ca_file"):
        try:
            context.load_verify_locations(
                _path(base, tls["client_ca_file"], "tls_server_config.client_ca_file")
            )
        except ssl.SSLError as error:
            raise _Problem(
                f"cannot load client_ca_file: {error.reason or error}",
                "tls_server_config.client_ca_file",
            ) from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise _Problem(
            f"client_auth_type {mode} needs tls_server_config.client_ca_file",
            "tls_server_config.client_auth_type",
        )
    return context


def _users(users: Any) -> BasicAuth:
    if not isinstance(users, dict) or not users:
        raise _Problem(
            "basic_auth_users must be a mapping of user names to bcrypt hashes", "basic_auth_users"
        )
    checked: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise _Problem(
                f"basic_auth_users.{user} is not a bcrypt hash", f"basic_auth_users.{user}"
            )
        checked[str(user)] = hashed.encode()
    return BasicAuth(checked)


def load_web_config(path: Path | None) -> WebConfig:
    """The web-config file; a `ConfigError` names the file, the line and what is wrong."""
    if path is None:
        return WebConfig()
    try:
        text = path.read_text(encoding="utf-8")
        document = yaml.safe_load(text) or {}
    except OSError as error:
        raise ConfigError.of({SETTING: f"{path}: cannot read it ({error.strerror})"}) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        what = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError.of({SETTING: f"{path}{where}: cannot read it as YAML ({what})"}) from None
    try:
        return _web_config(path.parent, document)
    except _Problem as problem:
        line = _key_lines(text).get(problem.key)
        where = f", line {line}" if line else ""
        raise ConfigError.of({SETTING: f"{path}{where}: {problem}"}) from None


def _web_config(base: Path, document: Any) -> WebConfig:
    if not isinstance(document, dict):
        raise _Problem("must be a YAML mapping")
    unknown = set(document) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        key = str(sorted(unknown)[0])
        raise _Problem(f"{key} is not supported", key)
    tls = document.get("tls_server_config")
    users = document.get("basic_auth_users")
    return WebConfig(
        ssl_context=_tls(base, tls) if tls else None,
        auth=_users(users) if users else None,
    )
