"""The command line: `--demo`, `--once`, `--version`, and a flag for every setting.

pydantic-settings' `CliSettingsSource` makes the kebab-case flags from the `Settings` fields, on a
root parser that adds the commands; flags win over the environment. Every invalid or missing
setting is named in one `ConfigError` line; no value is ever echoed.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Mapping
from functools import partial
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_settings import CliSettingsSource, SettingsError

from . import __version__
from .errors import ConfigError
from .settings import ENV_PREFIX, KEYS_REQUIRED, Settings, setting_label

#: How `--help` groups the settings, in its order: every setting is in exactly one group.
GROUPS: dict[str, tuple[str, ...]] = {
    "NSML API": (
        "access_key",
        "secret_key",
        "api_key",
        "secrets_dir",
        "base_url",
        "timezone",
        "page_size",
        "first_page",
        "concurrency",
        "request_timeout",
        "retries",
        "max_response_bytes",
    ),
    "reading the run list": (
        "collect_timeout",
        "collection_mode",
        "read_rate",
        "reconcile_interval",
        "cache_seconds",
        "min_interval",
        "state_file",
    ),
    "details (projects, run details, nodes)": (
        "details",
        "detail_requests",
        "nodes_refresh",
        "status_refresh",
    ),
    "metrics": (
        "known_statuses",
        "run_series_statuses",
        "active_statuses",
        "projects",
        "max_run_series",
        "duration_buckets",
        "finished_age_buckets",
    ),
    "serving /metrics": (
        "listen_address",
        "port",
        "web_config_file",
        "max_connections",
        "header_timeout",
        "shutdown_grace",
    ),
    "logging": ("log_level", "log_format"),
}
#: What a setting's value is, where its type alone would not say (`--port PORT`, not `int`).
METAVARS = {
    "access_key": "KEY",
    "secret_key": "KEY",
    "api_key": "KEY",
    "secrets_dir": "DIR",
    "base_url": "URL",
    "timezone": "ZONE",
    "listen_address": "ADDRESS",
    "port": "PORT",
    "read_rate": "PER_SECOND",
    "max_response_bytes": "BYTES",
    "state_file": "FILE",
    "web_config_file": "FILE",
    "duration_buckets": "SECONDS,...",
    "finished_age_buckets": "SECONDS,...",
}
_BY_TYPE: dict[object, str] = {int: "N", float: "SECONDS", bool: "true|false", str: "TEXT"}
_DEFAULT = re.compile(r" \(default: .*?\)(?= \[env:)", re.DOTALL)


def _shown(value: object) -> str:
    """A default as it would be typed: `true`, `60,300`, `a,b`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(_shown(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _add_setting(
    groups: dict[str, argparse._ArgumentGroup],
    parser: argparse.ArgumentParser,
    *names: str,
    **kwargs: Any,
) -> argparse.Action:
    """pydantic-settings' `add_argument_method`: each setting's flag in its help group, with a
    metavar that says what the value is and its default as it would be typed (no default for
    a setting without one)."""
    name = kwargs["dest"]
    field = Settings.model_fields[name]  # pydantic-settings adds an argument for settings only
    if not str(kwargs.get("metavar")).startswith("{"):  # choices stay as argparse shows them
        annotation = field.annotation
        kwargs["metavar"] = METAVARS.get(name) or (
            "A,B,..." if "list" in str(annotation) else _BY_TYPE[annotation]
        )
    default = field.default
    shown = "" if default is None or default == [] else f" (default: {_shown(default)})"
    kwargs["help"] = _DEFAULT.sub(shown, kwargs["help"])
    return groups[name].add_argument(*names, **kwargs)


class _RootParser(argparse.ArgumentParser):
    """Errors raise instead of printing usage: the caller prints one line and exits 2. An
    unknown flag is given the closest known one, as a misspelt environment variable is."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            known = [flag for action in self._actions for flag in action.option_strings]
            hints = []
            for word in message.removeprefix(prefix).split():
                flag = word.split("=", 1)[0]
                if not flag.startswith("--"):
                    continue
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
                if close:
                    hints.append(f"{flag}: did you mean {close[0]}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        raise ConfigError.usage(message)


def build_parser() -> tuple[argparse.ArgumentParser, CliSettingsSource[argparse.Namespace]]:
    parser = _RootParser(
        prog="nsml-exporter",
        description="Prometheus exporter for NAVER Cloud CLOVA NSML runs. Every setting is a "
        f"flag and an environment variable ({ENV_PREFIX}...); flags win over the environment.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo = parser.add_argument_group("demo (no NSML account needed)")
    demo.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in NSML simulator on loopback and export its runs (no keys needed)",
    )
    demo.add_argument(
        "--demo-runs",
        type=int,
        default=240,
        metavar="N",
        help="with --demo: runs in the simulator's history (default: 240; 100000 with "
        "--demo-latency 0.1 shows reading in the background)",
    )
    demo.add_argument(
        "--demo-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --demo: seconds the simulator takes to answer each request (default: 0)",
    )
    demo.add_argument(
        "--demo-order",
        choices=("newest", "arbitrary"),
        default="newest",
        help="with --demo: the simulator lists runs newest first, or in an arbitrary order "
        "(default: newest)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="collect once, print the exposition, exit 0 if it succeeded and 1 if not",
    )
    parser.add_argument("--version", action="version", version=f"nsml-exporter {__version__}")
    groups = {}
    for title, names in GROUPS.items():
        group = parser.add_argument_group(title)
        groups.update(dict.fromkeys(names, group))
    cli: CliSettingsSource[argparse.Namespace] = CliSettingsSource(
        Settings,
        root_parser=parser,
        add_argument_method=partial(_add_setting, groups),
        cli_kebab_case=True,
        cli_show_env_vars=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        cli_exit_on_error=False,
        case_sensitive=True,
    )
    return parser, cli


def _describe(error: ValidationError) -> ConfigError:
    """Every invalid setting, in one line."""
    problems: dict[str, str] = {}
    for item in error.errors(include_input=False, include_url=False):
        # Every error is a field's: no validator of the whole model, and the sources give
        # only fields (unknown variables are warned of, unknown flags refused by the parser).
        name = str(item["loc"][0]) if item["loc"] else ""
        problems.setdefault(setting_label(name), item["msg"].removeprefix("Value error, "))
    return ConfigError.of(problems)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`NSML_EXPORTER_*` variables (any case) that are no setting, each with the closest
    setting's name. Names are compared without the prefix they all share: with it, any typo
    would look close to some setting."""
    known = [name.upper() for name in Settings.model_fields]
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper[len(ENV_PREFIX) :] in known:
            continue
        close = difflib.get_close_matches(upper[len(ENV_PREFIX) :], known, n=1, cutoff=0.75)
        found.append(f"{name} (did you mean {ENV_PREFIX}{close[0]}?)" if close else name)
    return found


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    """Parse the command line over the environment; raises `ConfigError` naming what is wrong."""
    parser, cli = build_parser()
    args = parser.parse_args(argv)
    if args.demo_runs < 0 or args.demo_latency < 0:
        raise ConfigError.usage("--demo-runs and --demo-latency must not be negative")
    required = KEYS_REQUIRED.set(not args.demo)
    try:
        settings = Settings(_cli_settings_source=cli(parsed_args=args))
    except ValidationError as error:
        raise _describe(error) from None
    except SettingsError as error:
        raise ConfigError.usage(str(error).splitlines()[0]) from None
    finally:
        KEYS_REQUIRED.reset(required)
    return args, settings


def unknown_variables_warning() -> str | None:
    typos = unknown_variables(os.environ)
    if not typos:
        return None
    return "ignoring environment variables that are no setting: " + ", ".join(typos)


def settings_warnings(settings: Settings) -> list[str]:
    """What is valid but does not do what it seems to: one line each, logged at start-up."""
    found = []
    if warning := unknown_variables_warning():
        found.append(warning)
    if settings.request_timeout > settings.collect_timeout:
        what = (
            "no request waits past COLLECT_TIMEOUT, so it acts as COLLECT_TIMEOUT"
            if settings.collection_mode == "scrape"
            else "requests for a scrape give up at COLLECT_TIMEOUT first; only pages read in "
            "the background wait that long"
        )
        found.append(
            f"{setting_label('request_timeout')} ({settings.request_timeout:g}s) is longer than "
            f"{setting_label('collect_timeout')} ({settings.collect_timeout:g}s): {what}"
        )
    return found
