"""Settings: `NSML_EXPORTER_*` environment variables, each also a command-line flag (flags win).

A pydantic-settings model. Its sources, strongest first: the command line (`cli.py`), the
environment, and the key files in `SECRETS_DIR` (`access-key`, `secret-key`, `api-key`: a mounted
Kubernetes Secret). Field descriptions are the `--help` text.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "NSML_EXPORTER_"
DEFAULT_BASE_URL = "https://nsml.apigw.ntruss.com/nsml/v1"
KEY_FILES = {"access_key": "access-key", "secret_key": "secret-key", "api_key": "api-key"}

CommaList = Annotated[list[str], NoDecode]
BucketList = Annotated[list[float], NoDecode]
#: Whether the keys are required (all but `--demo`): set by the command line around validation,
#: so that missing keys are named in the same line as every other invalid setting.
KEYS_REQUIRED: ContextVar[bool] = ContextVar("keys_required", default=False)


class KeyFilesSource(PydanticBaseSettingsSource):
    """Keys from files in `SECRETS_DIR`, for the keys no flag or variable has set."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        folder = self.current_state.get("secrets_dir")
        if not folder or not Path(folder).is_dir():
            return {}
        found = {}
        for name, filename in KEY_FILES.items():
            path = Path(folder) / filename
            if self.current_state.get(name) is None and path.is_file():
                text = path.read_text(encoding="utf-8").strip()
                if text:
                    found[name] = text
        return found


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
    page_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="items per page requested; a gateway that serves fewer is followed, one "
        "that refuses it with 400 is asked for 100",
    )
    first_page: int = Field(
        1, ge=0, le=1, description="number of the first page: 1, or 0 for a 0-based API"
    )
    concurrency: int = Field(4, ge=1, le=64, description="pages fetched at once after the first")
    request_timeout: float = Field(5.0, gt=0, le=300, description="seconds per API request")
    collect_timeout: float = Field(
        9.0, gt=0, le=3600, description="seconds for a whole collection, retries included"
    )
    collection_mode: Literal["auto", "scrape", "background"] = Field(
        "auto",
        description="auto: read the run list on each scrape while a full read fits "
        "COLLECT_TIMEOUT, else in the background; scrape or background: always so",
    )
    read_rate: float = Field(
        8.0,
        gt=0,
        le=1000,
        description="most API requests a second while reading in the background: full reads, "
        "the list's head and run details share it",
    )
    reconcile_interval: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="least seconds between the starts of two full reads in the background",
    )
    retries: int = Field(
        2, ge=0, le=10, description="retries of a page on 429/5xx/timeouts/connection errors"
    )
    cache_seconds: float = Field(
        0.0, ge=0, le=86_400, description="reuse a collection younger than this; 0 = every scrape"
    )
    min_interval: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="seconds between the starts of two collections; a scrape sooner than that "
        "is served the last one (protects the API quota from a flood of scrapes)",
    )
    max_connections: int = Field(
        512, ge=1, le=100_000, description="connections served at once; more are answered 503"
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="seconds a request (TLS handshake, request line, headers) has to arrive "
        "whole, however slowly it trickles; also the longest an idle connection is kept",
    )
    shutdown_grace: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="seconds that scrapes in flight get to finish after SIGTERM",
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
    active_statuses: CommaList = Field(
        ["RUN_STATE_IN_PROGRESS"],
        description="statuses of runs still going; every other status counts as finished",
    )
    duration_buckets: BucketList = Field(
        [60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800],
        description="upper bounds (seconds) of nsml_run_duration_seconds, comma-separated; "
        "+Inf is implied",
    )
    finished_age_buckets: BucketList = Field(
        [900, 3600, 21600, 86400, 604800, 2592000],
        description="upper bounds (seconds) of nsml_run_finished_age_seconds, comma-separated; "
        "+Inf is implied",
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
    details: bool = Field(
        True,
        description="read projects, run details and node lists for GPU and capacity metrics "
        "(true or false)",
    )
    detail_requests: int = Field(
        50,
        ge=0,
        le=10_000,
        description="most run-detail and node-list requests one collection spends, oldest runs "
        "first (made after the collection, off the scrape's path)",
    )
    nodes_refresh: float = Field(
        300.0, gt=0, le=86_400, description="seconds before a run's node list is read again"
    )
    status_refresh: float = Field(
        40.0,
        gt=0,
        le=86_400,
        description="seconds before the detail of a run with per-run series is read again for "
        "its status (a run that finished or was deleted shows within about this)",
    )
    state_file: Path | None = Field(
        None,
        description="where the store of runs is saved, so that a restart serves the last view "
        "at once and reconciles it (empty = off)",
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, KeyFilesSource(settings_cls)

    @field_validator(
        "known_statuses", "run_series_statuses", "active_statuses", "projects", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().startswith("["):
            # A JSON list, as other settings libraries take: its items, not `["a"` and `"b"]`.
            try:
                items = json.loads(value)
            except ValueError:
                items = None
            if not isinstance(items, list) or not all(
                isinstance(item, str | int | float) and not isinstance(item, bool) for item in items
            ):
                raise ValueError("a comma-separated list (a,b) or a JSON list of strings")
            return [str(item).strip() for item in items if str(item).strip()]
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return cls._split_commas(value[0])
        return value

    @field_validator("duration_buckets", "finished_age_buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: Any) -> Any:
        return cls._split_commas(value)

    @field_validator("duration_buckets", "finished_age_buckets")
    @classmethod
    def _check_buckets(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one bound")
        if any(not 0 < bound < float("inf") for bound in value):
            raise ValueError("bounds must be positive numbers of seconds (+Inf is implied)")
        if sorted(set(value)) != value:
            raise ValueError("bounds must be in increasing order, each once")
        return value

    @field_validator("access_key", "secret_key", "api_key", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("access_key", "secret_key")
    @classmethod
    def _required_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None and KEYS_REQUIRED.get():
            raise ValueError("required (or run with --demo)")
        return value

    @field_validator("secrets_dir", "web_config_file", "state_file", mode="before")
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
        if value is None:
            return value
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        for filename in KEY_FILES.values():
            path = value / filename
            if path.exists() and not path.is_file():
                raise ValueError(f"{path} is not a file")
            if path.is_file() and not os.access(path, os.R_OK):
                raise ValueError(f"{path} cannot be read (permission denied)")
        return value

    @field_validator("web_config_file")
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if value.is_dir():
            raise ValueError(f"{value} is a directory, not a file")
        if not value.is_file():
            raise ValueError(f"{value}: no such file")
        return value

    @field_validator("state_file")
    @classmethod
    def _check_state_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        if value.is_dir():
            raise ValueError(f"{value} is a directory, not a file")
        if not value.parent.is_dir():
            raise ValueError(f"its folder {value.parent} does not exist")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def setting_label(name: str) -> str:
    """`page_size` -> `NSML_EXPORTER_PAGE_SIZE (--page-size)`."""
    return f"{ENV_PREFIX}{name.upper()} ({flag_of(name)})"


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")
