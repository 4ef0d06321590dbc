"""Settings for tests, canned API pages, and the key pair the simulator checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.cli import parse_args
from exporter.settings import Settings, flag_of

FIXTURES = Path(__file__).parent.parent / "fixtures"


ACCESS = "AK-test-access"


SECRET = "SK-test-secret-do-not-leak-0123456789"


def settings_from(flags: dict[str, str] | None = None) -> Settings:
    """Settings as the command line `--name value ...` (over the environment) gives them."""
    argv = [part for name, value in (flags or {}).items() for part in (flag_of(name), value)]
    return parse_args(argv)[1]


def make_settings(**overrides: Any) -> Settings:
    # Unit tests scrape back to back: each scrape collects unless a test says otherwise.
    values: dict[str, Any] = {"access_key": ACCESS, "secret_key": SECRET, "min_interval": 0}
    values.update(overrides)
    return Settings(**values)


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))
