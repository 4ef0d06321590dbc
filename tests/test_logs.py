"""Logging: text from outside never forges a line or drives a terminal; JSON stays one object a
line; a traceback keeps its lines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from exporter.logs import setup_logging
from tests.fake_api import Fault, FaultyServer
from tests.helpers.process import ExporterProcess, exporter_args_for, exporter_env, raw
from tests.helpers.runs import static_runs

HOSTILE = "ok\nFORGED-LINE ERROR exporter: all good\r\x1b[2J\x85\x00end"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_escape_every_control_character(restore_logging: None) -> None:
    """Bugs caught: a control character written raw (a forged line, a terminal driven), or
    the line without its time, level and logger."""
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    logging.getLogger("exporter.test").warning("API said %s", HOSTILE)
    (line,) = stream.getvalue().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING exporter.test: API said ", line)
    assert line.endswith(r"API said ok\nFORGED-LINE ERROR exporter: all good\r\x1b[2J\x85\x00end")


def test_a_traceback_keeps_its_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("exporter.test").exception("failed: %s", "a\nb")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(r"failed: a\nb")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


def test_json_lines_are_one_object_each(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    logging.getLogger("exporter.test").warning("API said %s", HOSTILE)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["msg"] == f"API said {HOSTILE}"


def test_json_lines_have_the_documented_fields(restore_logging: None) -> None:
    """Bugs caught: a field renamed (`time`, `level`, `logger`, `msg`, `exception`: what log
    pipelines select on), the level upper-cased, the time not UTC or not to the millisecond,
    a traceback dropped, or a project's Korean name written as escapes."""
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    log = logging.getLogger("exporter.test")
    log.info("plain 음성인식-팀")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    plain, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(plain) == {"time", "level", "logger", "msg"}
    assert (plain["level"], plain["logger"]) == ("info", "exporter.test")
    assert plain["msg"] == "plain 음성인식-팀"
    assert "음성인식-팀" in stream.getvalue()  # as written, not as \uc74c escapes
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", plain["time"])
    assert failed["level"] == "error"
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert failed["exception"].endswith("ValueError: boom")


@pytest.mark.process
def test_an_api_error_body_cannot_forge_log_lines(
    simulator: FaultyServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Issue 16 (5): an error body's `details` with a newline wrote a forged line at WARNING;
    at debug level a request line's control bytes reached the log raw."""
    simulator.sim.set_runs(static_runs(10))
    simulator.sim.fault = Fault("status", status=503, details=HOSTILE)
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--retries", "0", "--log-level", "debug"),
        env=exporter_env(),
    )
    assert "nsml_up 0.0" in exporter.get().text
    raw(exporter, b"GET /\x1b[2J\x07 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait=2)
    logs = exporter.logs()
    assert "FORGED-LINE" in logs  # the text is there, escaped
    assert not any(line.startswith("FORGED-LINE") for line in logs.splitlines())
    assert "\x1b" not in logs and "\x07" not in logs and "\r" not in logs


@pytest.mark.parametrize(
    ("char", "escaped"),
    [("\x1f", r"\x1f"), ("\x7f", r"\x7f"), ("\x9f", r"\x9f"), ("\x7e", "~"), ("\xa0", "\xa0")],
)
def test_the_escaped_range_is_exact_at_both_ends(
    restore_logging: None, char: str, escaped: str
) -> None:
    """Bug caught (issue 22's survivors): DEL (0x7f) left raw by a range off by one, or the
    printable neighbours (`~`, NBSP) escaped."""
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    logging.getLogger("exporter.test").warning("a%sb", char)
    assert stream.getvalue().rstrip("\n").endswith(f"a{escaped}b")
