"""Basic auth and proxy choice, as units: what the README promises about them."""

from __future__ import annotations

import base64

import bcrypt
import pytest

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
