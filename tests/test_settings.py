"""Settings from the environment and flags, and how bad ones are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import parse_args
from exporter.errors import ConfigError
from tests.helpers.process import run_cli
from tests.helpers.settings import SECRET, settings_from


def test_defaults_match_the_contract() -> None:
    settings = settings_from({"access_key": "a", "secret_key": "s"})
    assert settings.base_url == "https://nsml.apigw.ntruss.com/nsml/v1"
    assert (settings.listen_address, settings.port) == ("0.0.0.0", 9877)
    # PAGE_SIZE was 100 until issue 21 (see CHANGELOG): a capping gateway is followed, a 400
    # falls back to 100, so only the number of requests changes.
    assert (settings.page_size, settings.first_page, settings.concurrency) == (1000, 1, 4)
    assert (settings.collection_mode, settings.read_rate) == ("auto", 8)
    assert (settings.reconcile_interval, settings.status_refresh) == (60, 40)
    assert settings.state_file is None
    assert (settings.request_timeout, settings.collect_timeout, settings.retries) == (5, 9, 2)
    assert settings.cache_seconds == 0
    assert settings.timezone == "Asia/Seoul"
    assert settings.known_statuses == ["RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED"]
    assert settings.run_series_statuses == ["RUN_STATE_IN_PROGRESS"]
    assert settings.max_run_series == 1000
    assert settings.projects == []
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert settings.web_config_file is None
    assert settings.api_key is None
    assert (settings.details, settings.detail_requests, settings.nodes_refresh) == (True, 50, 300)


def test_environment_and_flags_with_flags_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSML_EXPORTER_ACCESS_KEY", "env-access")
    monkeypatch.setenv("NSML_EXPORTER_SECRET_KEY", "env-secret")
    monkeypatch.setenv("NSML_EXPORTER_PAGE_SIZE", "50")
    monkeypatch.setenv("NSML_EXPORTER_CONCURRENCY", "8")
    monkeypatch.setenv("NSML_EXPORTER_KNOWN_STATUSES", "A, B,,C")
    _, settings = parse_args(["--page-size", "25", "--projects", "p1,team two"])
    assert settings.page_size == 25
    assert settings.concurrency == 8
    assert settings.known_statuses == ["A", "B", "C"]
    assert settings.projects == ["p1", "team two"]
    assert settings.access_key is not None
    assert settings.access_key.get_secret_value() == "env-access"


def test_keys_from_a_secrets_dir_when_not_set_otherwise(tmp_path: Path) -> None:
    (tmp_path / "access-key").write_text("file-access\n")
    (tmp_path / "secret-key").write_text("file-secret\n")
    settings = settings_from({"secrets_dir": str(tmp_path), "access_key": "flag-access"})
    assert settings.access_key is not None and settings.secret_key is not None
    assert settings.access_key.get_secret_value() == "flag-access"
    assert settings.secret_key.get_secret_value() == "file-secret"
    assert settings.api_key is None


def test_secrets_never_appear_in_repr() -> None:
    settings = settings_from({"access_key": "a", "secret_key": SECRET, "api_key": "gw-secret"})
    assert SECRET not in repr(settings)
    assert "gw-secret" not in repr(settings)
    assert SECRET not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        ({"page_size": "0"}, "NSML_EXPORTER_PAGE_SIZE (--page-size)"),
        ({"port": "http"}, "NSML_EXPORTER_PORT (--port)"),
        ({"timezone": "Mars/Olympus"}, "NSML_EXPORTER_TIMEZONE (--timezone)"),
        ({"base_url": "ftp://x"}, "NSML_EXPORTER_BASE_URL (--base-url)"),
        ({"first_page": "2"}, "NSML_EXPORTER_FIRST_PAGE (--first-page)"),
        ({"log_format": "xml"}, "NSML_EXPORTER_LOG_FORMAT (--log-format)"),
        ({"duration_buckets": "60,30"}, "NSML_EXPORTER_DURATION_BUCKETS (--duration-buckets)"),
        ({"duration_buckets": "60,+Inf"}, "NSML_EXPORTER_DURATION_BUCKETS (--duration-buckets)"),
        (
            {"finished_age_buckets": "soon"},
            "NSML_EXPORTER_FINISHED_AGE_BUCKETS (--finished-age-buckets)",
        ),
        (
            {"web_config_file": "/no/such/file.yml"},
            "NSML_EXPORTER_WEB_CONFIG_FILE (--web-config-file)",
        ),
    ],
)
def test_invalid_settings_name_the_setting(flags: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from({"access_key": "a", "secret_key": "s", **flags})
    assert str(raised.value).startswith(f"invalid setting {setting}: ")


@pytest.mark.process
def test_bad_setting_exits_2_with_one_line_and_no_secret() -> None:
    result = run_cli(
        "--page-size",
        "-5",
        env={"NSML_EXPORTER_SECRET_KEY": SECRET, "NSML_EXPORTER_ACCESS_KEY": "a"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "NSML_EXPORTER_PAGE_SIZE (--page-size)" in lines[0]
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.process
def test_bad_environment_variable_exits_2_naming_it() -> None:
    result = run_cli(
        env={
            "NSML_EXPORTER_SECRET_KEY": SECRET,
            "NSML_EXPORTER_ACCESS_KEY": "a",
            "NSML_EXPORTER_CACHE_SECONDS": "soon",
        }
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "NSML_EXPORTER_CACHE_SECONDS" in result.stderr


@pytest.mark.process
def test_missing_keys_exit_2_and_suggest_demo() -> None:
    result = run_cli("--once")
    assert result.returncode == 2
    # Both keys are named in the one line, not one per run.
    assert result.stderr.strip() == (
        "nsml-exporter: invalid settings: NSML_EXPORTER_ACCESS_KEY (--access-key): "
        "required (or run with --demo); NSML_EXPORTER_SECRET_KEY (--secret-key): "
        "required (or run with --demo)"
    )


@pytest.mark.process
def test_unknown_flag_exits_2_with_one_line() -> None:
    result = run_cli("--page-sise", "10")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--page-sise" in result.stderr


@pytest.mark.process
def test_help_lists_every_setting_with_env_and_default() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in (
        "ACCESS_KEY",
        "SECRET_KEY",
        "API_KEY",
        "BASE_URL",
        "LISTEN_ADDRESS",
        "PORT",
        "PAGE_SIZE",
        "FIRST_PAGE",
        "CONCURRENCY",
        "REQUEST_TIMEOUT",
        "COLLECT_TIMEOUT",
        "RETRIES",
        "CACHE_SECONDS",
        "TIMEZONE",
        "KNOWN_STATUSES",
        "RUN_SERIES_STATUSES",
        "MAX_RUN_SERIES",
        "PROJECTS",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "WEB_CONFIG_FILE",
    ):
        assert f"--{name.lower().replace('_', '-')}" in text
        assert f"[env: NSML_EXPORTER_{name}]" in text
    assert "(default: 9877)" in text
    assert "(default: RUN_STATE_IN_PROGRESS,RUN_STATE_COMPLETED)" in text
    assert text.count("required") == 2  # once for each key, not twice each
    assert "(default: None)" not in text


def test_help_is_the_reviewed_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs caught (issue 28): `--help` reading like a dump of the settings model (type names
    as metavars, `(default: None)` for a required key, list defaults as Python reprs, options
    in one heap). The page is kept in tests/fixtures/help.txt: a change to it shows in review
    as a diff of what users read. To accept one: `COLUMNS=100 python -c "from exporter.cli
    import build_parser; print(build_parser()[0].format_help(), end='')" >
    tests/fixtures/help.txt`."""
    from exporter.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    expected = (Path(__file__).parent / "fixtures" / "help.txt").read_text()
    assert build_parser()[0].format_help() == expected


def test_every_setting_is_in_one_help_group_with_a_metavar_that_says_what_it_is() -> None:
    """Bugs caught: a setting added to the model but to no group (then shown nowhere, or in
    the wrong place), or shown with a Python type for metavar (`SecretStr`, `list[str]`)."""
    from exporter.cli import GROUPS, build_parser
    from exporter.settings import Settings

    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(Settings.model_fields)
    parser, _ = build_parser()
    for action in parser._actions:
        if action.dest in Settings.model_fields:
            assert action.metavar not in (None, "str", "int", "float", "bool", "SecretStr")
            assert "[" not in str(action.metavar)  # no `list[str]`


@pytest.mark.process
def test_several_invalid_settings_are_named_in_one_line() -> None:
    result = run_cli(
        "--page-size", "0", "--timezone", "Mars/Olympus", env={"NSML_EXPORTER_PORT": "http"}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for setting in ("PAGE_SIZE", "TIMEZONE", "PORT", "ACCESS_KEY", "SECRET_KEY"):
        assert f"NSML_EXPORTER_{setting}" in lines[0]


@pytest.mark.process
def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    result = run_cli(
        "--demo", "--once", env={"NSML_EXPORTER_PAGESIZE": "10", "NSML_EXPORTER_ZZZ": "1"}
    )
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "no setting" in line]
    assert len(warnings) == 1, result.stderr
    assert "NSML_EXPORTER_PAGESIZE (did you mean NSML_EXPORTER_PAGE_SIZE?)" in warnings[0]
    assert "NSML_EXPORTER_ZZZ" in warnings[0]


def test_a_typo_is_found_in_any_case_and_a_stranger_gets_no_suggestion() -> None:
    """Bugs caught: a case-sensitive prefix check (a lower-case typo goes unsaid), and a
    suggestion made on the shared prefix alone (ZZZ is no misspelt PORT)."""
    from exporter.cli import unknown_variables

    found = unknown_variables(
        {
            "nsml_exporter_pagesize": "10",
            "NSML_EXPORTER_ZZZ": "1",
            "NSML_EXPORTER_PORT": "1",  # a setting: not named
            "nsml_exporter_port": "1",  # a setting in another case: not named
            "OTHER_PAGESIZE": "1",  # not ours
        }
    )
    assert found == [
        "NSML_EXPORTER_ZZZ",
        "nsml_exporter_pagesize (did you mean NSML_EXPORTER_PAGE_SIZE?)",
    ]


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        ({"max_run_series": "-1"}, "MAX_RUN_SERIES"),
        ({"duration_buckets": "60,60,120"}, "DURATION_BUCKETS"),
        ({"finished_age_buckets": "0,60"}, "FINISHED_AGE_BUCKETS"),
        ({"max_response_bytes": "1023"}, "MAX_RESPONSE_BYTES"),
        ({"page_size": "-1"}, "PAGE_SIZE"),
    ],
)
def test_boundary_values_below_the_range_are_refused(flags: dict[str, str], setting: str) -> None:
    """Bugs caught: `ge=0` dropped from MAX_RUN_SERIES, duplicate bucket bounds allowed."""
    with pytest.raises(ConfigError, match=f"NSML_EXPORTER_{setting} "):
        settings_from({"access_key": "a", "secret_key": "s", **flags})


@pytest.mark.parametrize(
    ("flags", "attribute", "expected"),
    [
        ({"max_run_series": "0"}, "max_run_series", 0),
        ({"max_response_bytes": "1024"}, "max_response_bytes", 1024),
        ({"duration_buckets": "0.5,60"}, "duration_buckets", [0.5, 60.0]),
    ],
)
def test_boundary_values_at_the_edge_of_the_range_are_taken(
    flags: dict[str, str], attribute: str, expected: object
) -> None:
    settings = settings_from({"access_key": "a", "secret_key": "s", **flags})
    assert getattr(settings, attribute) == expected


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        ({"details": "maybe"}, "DETAILS"),
        ({"detail_requests": "-1"}, "DETAIL_REQUESTS"),
        ({"detail_requests": "10001"}, "DETAIL_REQUESTS"),
        ({"nodes_refresh": "0"}, "NODES_REFRESH"),
        ({"nodes_refresh": "86401"}, "NODES_REFRESH"),
    ],
)
def test_detail_settings_out_of_range_are_refused(flags: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=f"NSML_EXPORTER_{setting} "):
        settings_from({"access_key": "a", "secret_key": "s", **flags})


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), ("1", True), ("0", False)]
)
def test_details_takes_every_boolean_spelling(value: str, expected: bool) -> None:
    assert (
        settings_from({"access_key": "a", "secret_key": "s", "details": value}).details is expected
    )


def test_detail_settings_at_their_bounds_are_taken() -> None:
    settings = settings_from(
        {"access_key": "a", "secret_key": "s", "detail_requests": "0", "nodes_refresh": "86400"}
    )
    assert (settings.detail_requests, settings.nodes_refresh) == (0, 86400)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ('["a","b"]', ["a", "b"]),
        ('[ "RUN_STATE_FAILED" , "x y" ]', ["RUN_STATE_FAILED", "x y"]),
        ("a, b", ["a", "b"]),
        ("[]", []),
    ],
)
def test_list_settings_take_a_json_list_or_commas(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: list[str]
) -> None:
    """Bug caught (issue 28): `KNOWN_STATUSES='["a","b"]'` taken literally, as the labels
    `["a"` and `"b"]`, which no run ever has."""
    monkeypatch.setenv("NSML_EXPORTER_PROJECTS", given)
    _, settings = parse_args(["--demo"])
    assert settings.projects == expected


def test_a_json_list_of_anything_but_names_is_refused() -> None:
    """Bug caught: a JSON list of objects kept as its Python repr, or a broken one split at
    its commas."""
    for given in ('[{"a": 1}]', '["a", '):
        with pytest.raises(ConfigError, match="JSON list of strings"):
            parse_args(["--demo", "--projects", given])


def test_a_misspelt_flag_is_given_the_closest_one() -> None:
    """Bug caught (issue 28): `--pagesize` got no "did you mean", though a misspelt
    environment variable does."""
    with pytest.raises(ConfigError) as caught:
        parse_args(["--demo", "--pagesize", "10", "--collect-timout=5", "--zzz"])
    message = str(caught.value)
    assert "--pagesize: did you mean --page-size?" in message
    assert "--collect-timout: did you mean --collect-timeout?" in message
    assert "--zzz:" not in message  # nothing close: no guess


def test_a_request_timeout_past_collect_timeout_is_warned() -> None:
    """Bug caught (issue 28): a REQUEST_TIMEOUT above COLLECT_TIMEOUT accepted in silence
    (on scrape no request waits that long; in the background only pages do)."""
    from exporter.cli import settings_warnings

    _, longer = parse_args(["--demo", "--request-timeout", "30", "--collect-timeout", "5"])
    (warning,) = settings_warnings(longer)
    assert warning.startswith("NSML_EXPORTER_REQUEST_TIMEOUT (--request-timeout) (30s) is longer")
    assert warning.endswith("only pages read in the background wait that long")
    flags = ["--demo", "--request-timeout", "30", "--collect-timeout", "5"]
    _, on_scrape = parse_args([*flags, "--collection-mode", "scrape"])
    (warning,) = settings_warnings(on_scrape)
    assert warning.endswith("no request waits past COLLECT_TIMEOUT, so it acts as COLLECT_TIMEOUT")
    _, equal = parse_args(["--demo", "--request-timeout", "5", "--collect-timeout", "5"])
    assert settings_warnings(equal) == []


def test_the_simulators_help_says_what_every_option_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bug caught (issue 28): `python -m exporter.demo --help` listed options with no word
    of what they do (`--seed SEED`, `--port PORT`)."""
    from exporter.demo.__main__ import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    flags = [word for word in text.split() if word.startswith("--") and word[2:3].isalpha()]
    assert "--churn-every" in flags and "--max-page-size" in flags
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("--") and not stripped.startswith("--help"):
            # An option line with its help beside it, or on the next line.
            words = stripped.split()
            beside = len(words) > 2 or (len(words) == 2 and words[1][0].islower())
            below = index + 1 < len(lines) and lines[index + 1].startswith(" " * 20)
            assert beside or below, line
    assert "(default: 240)" in text and "(default: None)" not in text


def test_a_key_file_that_is_no_file_is_named(tmp_path: Path) -> None:
    """Bug caught (issue 28): a mounted Secret whose `access-key` is a directory passed over
    in silence, so the only word was "access key required"."""
    (tmp_path / "access-key").mkdir()
    (tmp_path / "secret-key").write_text("s")
    with pytest.raises(ConfigError) as caught:
        parse_args(["--secrets-dir", str(tmp_path)])
    assert f"{tmp_path / 'access-key'} is not a file" in str(caught.value)


def test_a_directory_as_web_config_file_is_named_as_one(tmp_path: Path) -> None:
    """Bug caught (issue 28): a directory given as `--web-config-file` got "no such file",
    without the path."""
    with pytest.raises(ConfigError) as caught:
        parse_args(["--demo", "--web-config-file", str(tmp_path)])
    assert f"{tmp_path} is a directory, not a file" in str(caught.value)
    with pytest.raises(ConfigError) as missing:
        parse_args(["--demo", "--web-config-file", str(tmp_path / "web.yml")])
    assert f"{tmp_path / 'web.yml'}: no such file" in str(missing.value)


def test_an_unreadable_key_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug caught (issue 28): a key file the exporter's user may not read gave a
    `PermissionError` traceback. (These tests run as root, who may read anything: the check
    is made unreadable instead of the file.)"""
    (tmp_path / "access-key").write_text("a")
    (tmp_path / "secret-key").write_text("s")
    monkeypatch.setattr("exporter.settings.os.access", lambda path, mode: False)
    with pytest.raises(ConfigError) as caught:
        parse_args(["--secrets-dir", str(tmp_path)])
    assert f"{tmp_path / 'access-key'} cannot be read (permission denied)" in str(caught.value)


def test_config_errors_read_as_one_line_naming_each_setting() -> None:
    """Bugs caught: several bad settings said as one (or without "invalid settings:"), their
    problems joined so that one runs into the next, a command-line error wrapped in "invalid
    setting command line: ...", or a single bad setting not named."""
    assert str(ConfigError.of({"A": "too big"})) == "invalid setting A: too big"
    both = ConfigError.of({"A": "too big", "B": "not a number"})
    assert str(both) == "invalid settings: A: too big; B: not a number"
    assert str(ConfigError.usage("unrecognized arguments: --x")) == "unrecognized arguments: --x"
    with pytest.raises(ConfigError) as raised:
        parse_args(["--demo", "--port", "-1", "--page-size", "0"])
    assert str(raised.value).startswith("invalid settings: ")
    assert "NSML_EXPORTER_PORT (--port)" in str(raised.value)
    assert "NSML_EXPORTER_PAGE_SIZE (--page-size)" in str(raised.value)


# -- the command line in-process: the words a user reads ------------------------------------


def refused(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_args(argv)
    return str(caught.value)


def test_an_unknown_flag_is_said_with_every_close_one() -> None:
    """Bugs caught: the flag before `=` not the one compared (`--page-sise=a=b`), words that
    are no flag given hints, the hints' punctuation; a hint for a flag only loosely like one
    (`--pagexx` is not `--page-size`)."""
    assert refused(["--demo", "--page-sise=a=b", "stray", "--pages", "--pagexx", "--zzz"]) == (
        "unrecognized arguments: --page-sise=a=b stray --pages --pagexx --zzz "
        "(--page-sise: did you mean --page-size?; --pages: did you mean --page-size?)"
    )


def test_demo_flags_have_their_defaults_and_types() -> None:
    """Bugs caught: a `--demo-*` default other than `--help` says, or a value kept as text."""
    args, _ = parse_args(["--demo"])
    assert (args.demo_runs, args.demo_latency, args.demo_order) == (240, 0.0, "newest")
    args, _ = parse_args(["--demo", "--demo-runs", "0", "--demo-latency", "0.5"])
    assert (args.demo_runs, args.demo_latency) == (0, 0.5)
    args, _ = parse_args(["--demo", "--demo-order", "arbitrary"])
    assert args.demo_order == "arbitrary"


@pytest.mark.parametrize("argv", [["--demo-runs", "-1"], ["--demo-latency", "-0.5"]])
def test_negative_demo_flags_are_refused(argv: list[str]) -> None:
    """Bugs caught: either check skipped, or both needed to refuse."""
    message = "--demo-runs and --demo-latency must not be negative"
    assert refused(["--demo", *argv]) == message


def test_version_prints_the_name_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter import __version__

    with pytest.raises(SystemExit) as exited:
        parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"nsml-exporter {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--timezone", "Mars/Olympus"],
            "NSML_EXPORTER_TIMEZONE (--timezone): unknown IANA time zone (e.g. Asia/Seoul, UTC)",
        ),
        (
            ["--log-level", "loud"],
            "NSML_EXPORTER_LOG_LEVEL (--log-level): "
            "Input should be 'debug', 'info', 'warning' or 'error'",
        ),
    ],
)
def test_a_bad_value_is_said_in_the_validators_words(argv: list[str], said: str) -> None:
    """Bugs caught: pydantic's "Value error, " prefix left in, the setting named in another
    case or not at all, the value echoed."""
    assert refused(["--demo", *argv]) == f"invalid setting {said}"


def test_a_settings_error_is_said_by_its_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings raises `SettingsError` where a source cannot parse a value: its
    first line is the one a user reads (the rest is the library's traceback-like detail)."""
    import exporter.cli

    class Broken(exporter.cli.Settings):
        def __init__(self, **kwargs: object) -> None:
            raise exporter.cli.SettingsError("error parsing value for field projects\nmore")

    monkeypatch.setattr(exporter.cli, "Settings", Broken)
    assert refused(["--demo"]) == "error parsing value for field projects"


def test_unknown_variables_are_warned_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs caught: the warning's words or separators, a `None` warning listed."""
    from exporter.cli import settings_warnings, unknown_variables_warning

    assert unknown_variables_warning() is None
    monkeypatch.setenv("NSML_EXPORTER_PAGESIZE", "10")
    monkeypatch.setenv("NSML_EXPORTER_ZZZ", "1")
    line = (
        "ignoring environment variables that are no setting: "
        "NSML_EXPORTER_PAGESIZE (did you mean NSML_EXPORTER_PAGE_SIZE?), NSML_EXPORTER_ZZZ"
    )
    assert unknown_variables_warning() == line
    _, settings = parse_args(["--demo"])
    assert settings_warnings(settings) == [line]


def test_a_request_timeout_warning_names_both_settings() -> None:
    """Bug caught: COLLECT_TIMEOUT named by another label in the warning."""
    from exporter.cli import settings_warnings

    _, longer = parse_args(["--demo", "--request-timeout", "30", "--collect-timeout", "5"])
    assert settings_warnings(longer) == [
        "NSML_EXPORTER_REQUEST_TIMEOUT (--request-timeout) (30s) is longer than "
        "NSML_EXPORTER_COLLECT_TIMEOUT (--collect-timeout) (5s): requests for a scrape give up "
        "at COLLECT_TIMEOUT first; only pages read in the background wait that long"
    ]


def test_keys_are_required_unless_demo() -> None:
    """Bug caught: the keys' requirement not switched on for a real run (the exporter would
    start, sign nothing, and fail every read with 401)."""
    assert refused([]) == (
        "invalid settings: NSML_EXPORTER_ACCESS_KEY (--access-key): required (or run with "
        "--demo); NSML_EXPORTER_SECRET_KEY (--secret-key): required (or run with --demo)"
    )
    _, settings = parse_args(["--demo"])
    assert settings.access_key is None
