"""Settings: `NSML_EXPORTER_*` environment variables, each also a command-line flag (flags win).

Keys may also come from files in `SECRETS_DIR` named `access-key`, `secret-key` and `api-key`
(a mounted Kubernetes Secret), used when neither a flag nor the environment sets them.
Any invalid setting becomes a `ConfigError` naming it; its value is never echoed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import __version__
from .errors import ConfigError

ENV_PREFIX = "NSML_EXPORTER_"
DEFAULT_BASE_URL = "https://nsml.apigw.ntruss.com/nsml/v1"
SECRET_FILES = {"access_key": "access-key", "secret_key": "secret-key", "api_key": "api-key"}

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every setting of the exporter. Field descriptions are the `--help` text."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="forbid", validate_default=True
    )

    access_key: SecretStr | None = Field(None, description="NCP access key (required)")
    secret_key: SecretStr | None = Field(None, description="NCP secret key (required)")
    api_key: SecretStr | None = Field(
        None, description="API Gateway key, sent as x-ncp-apigw-api-key when set"
    )
    secrets_dir: Path | None = Field(
        None, description="folder with files access-key, secret-key, api-key (a mounted Secret)"
    )
    base_url: str = Field(DEFAULT_BASE_URL, description="API base, path included")
    listen_address: str = Field("0.0.0.0", description="address to serve on")
    port: int = Field(9877, ge=0, le=65535, description="port to serve on")
    page_size: int = Field(100, ge=1, le=100_000, description="runs per page requested")
    first_page: int = Field(
        1, ge=0, le=1, description="number of the first page: 1, or 0 for a 0-based API"
    )
    concurrency: int = Field(4, ge=1, le=64, description="pages fetched at once after the first")
    request_timeout: float = Field(5.0, gt=0, le=300, description="seconds per API request")
    collect_timeout: float = Field(
        9.0, gt=0, le=3600, description="seconds for a whole collection, retries included"
    )
    retries: int = Field(
        2, ge=0, le=10, description="retries of a page on 429/5xx/timeouts/connection errors"
    )
    cache_seconds: float = Field(
        0.0, ge=0, le=86_400, description="reuse a collection younger than this; 0 = every scrape"
    )
    timezone: str = Field("Asia/Seoul", description="IANA zone of createTime/updateTime")
    known_statuses: CommaList = Field(
        ["RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED"],
        description="statuses always reported (as 0 when absent), comma-separated",
    )
    run_series_statuses: CommaList = Field(
        ["RUN_STATE_IN_PROGRESS"],
        description="statuses whose runs get per-run series, comma-separated",
    )
    max_run_series: int = Field(
        1000, ge=0, description="cap on runs with per-run series (oldest first are kept)"
    )
    projects: CommaList = Field(
        [], description="only these projects, by id or name, comma-separated (empty = all)"
    )
    max_response_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest API response body accepted, in bytes"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning, error"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json (one JSON object per line)"
    )
    web_config_file: Path | None = Field(
        None, description="TLS and basic auth web-config YAML (Prometheus exporter-toolkit format)"
    )

    @field_validator("known_statuses", "run_series_statuses", "projects", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("access_key", "secret_key", "api_key", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("secrets_dir", "web_config_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone (e.g. Asia/Seoul, UTC)") from None
        return value

    @field_validator("secrets_dir")
    @classmethod
    def _check_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("not a directory")
        return value

    @field_validator("web_config_file")
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def require_credentials(self) -> None:
        """Outside demo mode both keys are needed; say which one is missing."""
        for name in ("access_key", "secret_key"):
            if getattr(self, name) is None:
                raise ConfigError(setting_label(name), "required (or run with --demo)")


def setting_label(name: str) -> str:
    """`page_size` -> `NSML_EXPORTER_PAGE_SIZE (--page-size)`."""
    return f"{ENV_PREFIX}{name.upper()} ({flag_of(name)})"


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help_default(name: str) -> str:
    default = Settings.model_fields[name].default
    if name in ("access_key", "secret_key"):
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, list):
        return ",".join(default) or "empty"
    return str(default)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="nsml-exporter",
        description="Prometheus exporter for NAVER Cloud CLOVA NSML runs. Every setting is a "
        f"flag and an environment variable ({ENV_PREFIX}...); flags win.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in NSML simulator on loopback and export its runs (no keys needed)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="collect once, print the exposition, exit 0 if it succeeded and 1 if not",
    )
    parser.add_argument("--version", action="version", version=f"nsml-exporter {__version__}")
    group = parser.add_argument_group("settings")
    for name, field in Settings.model_fields.items():
        group.add_argument(
            flag_of(name),
            dest=name,
            metavar=name.split("_")[-1].upper(),
            default=argparse.SUPPRESS,
            help=f"{field.description} (env {ENV_PREFIX}{name.upper()}; "
            f"default: {_help_default(name)})",
        )
    return parser


def _describe(error: ValidationError) -> ConfigError:
    first = error.errors(include_input=False, include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return ConfigError(f"{ENV_PREFIX}{name.upper()}", "not a known setting")
    return ConfigError(setting_label(name), message)


def load_settings(flags: dict[str, Any]) -> Settings:
    """Build settings from flag values (already parsed) over the environment."""
    try:
        settings = Settings(**flags)
    except ValidationError as error:
        raise _describe(error) from None
    if settings.secrets_dir is not None:
        updates: dict[str, Any] = {}
        for name, filename in SECRET_FILES.items():
            path = settings.secrets_dir / filename
            if getattr(settings, name) is None and path.is_file():
                text = path.read_text(encoding="utf-8").strip()
                if text:
                    updates[name] = SecretStr(text)
        settings = settings.model_copy(update=updates)
    return settings


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    """Parse the command line; on a bad setting print one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {
        name: value
        for name, value in vars(args).items()
        if name in Settings.model_fields and value is not None
    }
    try:
        settings = load_settings(flags)
        if not args.demo:
            settings.require_credentials()
    except ConfigError as error:
        print(f"nsml-exporter: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return args, settings
