"""The fault matrix: every way the NSML API can misbehave, through the simulator over real HTTP.

For each: `/metrics` still answers 200 within COLLECT_TIMEOUT plus a little, `nsml_up` is 0, no run
series are served from the failed collection, `nsml_collection_errors_total{reason}` and
`nsml_api_requests_total{code}` count it, one log line says what happened without any secret,
and the next collection after the API recovers is `nsml_up 1` again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_api import Fault, FaultyServer, FaultySimulator
from tests.helpers.process import ExporterProcess, exporter_env, start_exporter
from tests.helpers.runs import sim_run, static_runs
from tests.helpers.settings import ACCESS, SECRET

COLLECT_TIMEOUT = 4.0
RUNS = 230  # five pages of 50
SLACK = 1.5


@dataclass
class Stack:
    server: FaultyServer
    exporter: ExporterProcess

    @property
    def sim(self) -> FaultySimulator:
        return self.server.sim


def scrape_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def value(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    runs = static_runs(RUNS, projects=3)
    server = FaultyServer(FaultySimulator(ACCESS, SECRET, runs)).start()
    exporter = start_exporter(
        tmp_path_factory.mktemp("faults"),
        [
            "--base-url",
            server.base_url,
            "--access-key",
            ACCESS,
            "--page-size",
            "50",
            "--retries",
            "1",
            "--request-timeout",
            "1",
            "--collect-timeout",
            str(COLLECT_TIMEOUT),
            "--max-response-bytes",
            str(1024 * 1024),
            "--log-level",
            "debug",
        ],
        env=exporter_env(),
    )
    exporter.get()  # the read begun at start: each test's scrapes then read on their own
    yield Stack(server, exporter)
    exporter.stop()
    server.stop()


def check_failure(
    stack: Stack,
    *,
    reason: str,
    code: str,
    hint: str,
    codes_at_least: int = 1,
    break_it: Callable[[FaultySimulator], None],
    mend: Callable[[FaultySimulator], None],
    within: float = COLLECT_TIMEOUT + SLACK,
) -> str:
    before = scrape_values(stack.exporter.get().text)
    assert value(before, "nsml_up") == 1
    mark = len(stack.exporter.logs())
    break_it(stack.sim)
    try:
        response = stack.exporter.get()
    finally:
        mend(stack.sim)
    assert response.status_code == 200
    after = scrape_values(response.text)
    assert value(after, "nsml_up") == 0
    # The exporter's own clock, not the test's (a busy machine delays the test's reading):
    # the collection gave up by COLLECT_TIMEOUT (or `within`) rather than waiting out the fault.
    took = value(after, "nsml_scrape_duration_seconds")
    assert 0 < took < within, f"the collection took {took:.1f}s"
    served = {name for name, _ in after}
    assert not served & {
        "nsml_runs",
        "nsml_run_age_seconds",
        "nsml_run_created_timestamp_seconds",
        "nsml_run_updated_timestamp_seconds",
    }
    assert (
        value(after, "nsml_collection_errors_total", reason=reason)
        - value(before, "nsml_collection_errors_total", reason=reason)
    ) == 1
    assert (
        value(after, "nsml_api_requests_total", endpoint="runs", code=code)
        - value(before, "nsml_api_requests_total", endpoint="runs", code=code)
    ) >= codes_at_least
    time.sleep(0.1)  # let the log line land
    log = stack.exporter.logs()[mark:]
    failed = [line for line in log.splitlines() if "collection failed" in line]
    assert len(failed) == 1, log
    assert f"({reason})" in failed[0] and hint in failed[0], failed[0]
    assert SECRET not in log
    assert not any(signature in log for signature in stack.sim.signatures)
    recovered = scrape_values(stack.exporter.get().text)
    assert value(recovered, "nsml_up") == 1
    assert sum(v for (n, _), v in recovered.items() if n == "nsml_runs") == RUNS
    return failed[0]


def set_fault(fault: Fault) -> Callable[[FaultySimulator], None]:
    def apply(sim: FaultySimulator) -> None:
        sim.fault = fault

    return apply


def clear_fault(sim: FaultySimulator) -> None:
    sim.fault = None


@pytest.mark.parametrize(
    ("status", "reason", "hint", "attempts"),
    [
        (400, "http", "HTTP 400 Bad Request Exception (errorCode 100)", 1),
        (403, "auth", "HTTP 403 Forbidden (errorCode 230)", 1),
        (404, "http", "HTTP 404 Not Found Exception (errorCode 300)", 1),
        (413, "http", "HTTP 413 Request Entity Too Large (errorCode 430)", 1),
        (500, "http", "HTTP 500 Unexpected Error (errorCode 900)", 2),
        (503, "http", "HTTP 503 Endpoint Error (errorCode 500)", 2),
        (504, "http", "HTTP 504 Endpoint Timeout (errorCode 510)", 2),
        (429, "throttled", "HTTP 429 Rate Limited (errorCode 420)", 2),
    ],
)
@pytest.mark.process
def test_http_errors(stack: Stack, status: int, reason: str, hint: str, attempts: int) -> None:
    before = stack.sim.requests["runs"]
    check_failure(
        stack,
        reason=reason,
        code=str(status),
        hint=hint,
        codes_at_least=attempts,
        break_it=set_fault(Fault("status", status=status)),
        mend=clear_fault,
    )
    # 4xx other than 429 are not retried; 429 and 5xx are, once (RETRIES=1). The healthy
    # scrapes before and after the failure read five pages each.
    assert stack.sim.requests["runs"] - before == 5 + attempts + 5


@pytest.mark.process
def test_bad_signature(stack: Stack) -> None:
    def wrong_secret(sim: FaultySimulator) -> None:
        sim.secret_key = "another-secret"

    def restore(sim: FaultySimulator) -> None:
        sim.secret_key = SECRET

    check_failure(
        stack,
        reason="auth",
        code="401",
        break_it=wrong_secret,
        mend=restore,
        hint="HTTP 401 Authentication Failed (errorCode 200): signature mismatch",
    )


@pytest.mark.process
def test_clock_skew_says_to_check_the_clock(stack: Stack) -> None:
    def skew(sim: FaultySimulator) -> None:
        sim.clock_offset = 600

    def restore(sim: FaultySimulator) -> None:
        sim.clock_offset = 0

    line = check_failure(
        stack,
        reason="auth",
        code="401",
        break_it=skew,
        mend=restore,
        hint="timestamp is out of the allowed window",
    )
    # The Date header has one-second resolution.
    assert re.search(r"local clock is -(599|600|601)s off the API's", line), line
    assert "check NTP" in line


@pytest.mark.process
def test_429_with_retry_after_is_honoured_then_succeeds(stack: Stack) -> None:
    stack.sim.fault = Fault("status", status=429, retry_after="2", times=1)
    values = scrape_values(stack.exporter.get().text)
    stack.sim.fault = None
    assert value(values, "nsml_up") == 1
    assert 2.0 <= value(values, "nsml_scrape_duration_seconds") < COLLECT_TIMEOUT


@pytest.mark.process
def test_429_whose_retry_after_passes_the_deadline_fails_at_once(stack: Stack) -> None:
    """Bug caught: a Retry-After past the deadline slept until COLLECT_TIMEOUT before failing."""
    line = check_failure(
        stack,
        reason="throttled",
        code="429",
        hint="would pass COLLECT_TIMEOUT",
        break_it=set_fault(Fault("status", status=429, retry_after="60")),
        mend=clear_fault,
        within=COLLECT_TIMEOUT / 2,
    )
    assert "HTTP 429" in line


@pytest.mark.process
def test_429_without_retry_after_backs_off_and_counts(stack: Stack) -> None:
    check_failure(
        stack,
        reason="throttled",
        code="429",
        hint="HTTP 429",
        codes_at_least=2,
        break_it=set_fault(Fault("status", status=429)),
        mend=clear_fault,
    )


@pytest.mark.process
def test_connection_reset_mid_body(stack: Stack) -> None:
    check_failure(
        stack,
        reason="connection",
        code="connection",
        hint="page 1:",
        break_it=set_fault(Fault("reset")),
        mend=clear_fault,
    )


@pytest.mark.process
def test_a_page_that_never_answers(stack: Stack) -> None:
    check_failure(
        stack,
        reason="timeout",
        code="timeout",
        hint="no answer within",
        break_it=set_fault(Fault("hang", seconds=30)),
        mend=clear_fault,
    )


@pytest.mark.process
def test_a_body_that_trickles_past_the_deadline(stack: Stack) -> None:
    check_failure(
        stack,
        reason="timeout",
        code="timeout",
        hint="page 1: body still arriving at the deadline",
        break_it=set_fault(Fault("slow_body", seconds=20)),
        mend=clear_fault,
    )


@pytest.mark.parametrize(
    ("kind", "hint"),
    [
        ("html", "not a run-list page: Invalid JSON: expected value at line 1 column 1"),
        ("truncated", "not a run-list page: Invalid JSON: EOF while parsing"),
        (
            "wrong_types",
            "not a run-list page: Input should be a valid datetime at runList.0.createTime",
        ),
        ("missing_fields", "not a run-list page: Field required at runList.0.projectId"),
        ("oversized", "over MAX_RESPONSE_BYTES (1048576)"),
        ("gzip_bomb", "page 1: response is over MAX_RESPONSE_BYTES (1048576)"),
    ],
)
@pytest.mark.process
def test_unusable_2xx_bodies(stack: Stack, kind: str, hint: str) -> None:
    check_failure(
        stack,
        reason="invalid_response",
        code="invalid",
        hint=hint,
        break_it=set_fault(Fault(kind, size=2 * 1024 * 1024)),
        mend=clear_fault,
    )


@pytest.mark.parametrize(
    ("kind", "hint"),
    [
        ("ignore_page", "the API ignores page: page 2 returned the same runs as page 1"),
        ("forever", "the API kept returning pages past totalCount (230) after 12 pages"),
        ("total_high", "page 5 lists 30 runs and ends the list, but its totalCount (380)"),
    ],
)
@pytest.mark.process
def test_inconsistent_paging(stack: Stack, kind: str, hint: str) -> None:
    check_failure(
        stack,
        reason="inconsistent",
        code="200",
        hint=hint,
        break_it=set_fault(Fault(kind)),
        mend=clear_fault,
    )


@pytest.mark.process
def test_a_total_count_that_understates_the_list_is_followed_and_said(stack: Stack) -> None:
    """Bug caught (issue 26): runs past an understated totalCount left unread, so 230 runs
    were served as 130 with nsml_up 1 and no word."""
    mark = len(stack.exporter.logs())
    stack.sim.fault = Fault("total_low")
    try:
        values = scrape_values(stack.exporter.get().text)
    finally:
        stack.sim.fault = None
    assert value(values, "nsml_up") == 1
    assert sum(v for (n, _), v in values.items() if n == "nsml_runs") == RUNS
    time.sleep(0.1)
    said = [line for line in stack.exporter.logs()[mark:].splitlines() if "past its own" in line]
    assert len(said) == 1 and "listed 100 runs past its own totalCount" in said[0]


@pytest.mark.process
def test_a_failure_on_page_3_of_5(stack: Stack) -> None:
    line = check_failure(
        stack,
        reason="http",
        code="500",
        hint="page 3: HTTP 500",
        break_it=set_fault(Fault("status", status=500, pages={3})),
        mend=clear_fault,
    )
    assert "page 3" in line


@pytest.mark.process
def test_a_transient_5xx_is_retried_within_the_scrape(stack: Stack) -> None:
    stack.sim.fault = Fault("status", status=503, times=1, pages={2})
    text = stack.exporter.get().text
    stack.sim.fault = None
    values = scrape_values(text)
    assert value(values, "nsml_up") == 1
    assert sum(v for (n, _), v in values.items() if n == "nsml_runs") == RUNS


@pytest.mark.process
def test_connection_refused(
    tmp_path: Path, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    from tests.helpers.process import free_port

    port = free_port()
    exporter = exporter_factory(
        "--base-url",
        f"http://127.0.0.1:{port}/nsml/v1",
        "--access-key",
        ACCESS,
        "--retries",
        "1",
        env=exporter_env(),
    )
    values = scrape_values(exporter.get().text)
    assert 0 < value(values, "nsml_scrape_duration_seconds") < 9 + SLACK  # COLLECT_TIMEOUT
    assert value(values, "nsml_up") == 0
    assert value(values, "nsml_collection_errors_total", reason="connection") == 1
    assert value(values, "nsml_api_requests_total", endpoint="runs", code="connection") == 2
    assert "Connection refused" in exporter.logs()
    assert SECRET not in exporter.logs()
    # The API comes up: the next scrape reads it.
    server = FaultyServer(FaultySimulator(ACCESS, SECRET, static_runs(30)), port=port).start()
    try:
        recovered = scrape_values(exporter.get().text)
    finally:
        server.stop()
    assert value(recovered, "nsml_up") == 1
    assert sum(v for (n, _), v in recovered.items() if n == "nsml_runs") == 30


@pytest.mark.process
def test_wrong_timezone_is_warned_once_naming_the_setting(
    exporter_factory: Callable[..., ExporterProcess], simulator: FaultyServer
) -> None:
    now = time.time()
    simulator.sim.set_runs([sim_run("p1", "1", "RUN_STATE_IN_PROGRESS", created=now - 60)])
    # The simulator writes KST; read as UTC the run starts nine hours from now.
    exporter = exporter_factory(
        "--base-url",
        simulator.base_url,
        "--access-key",
        ACCESS,
        "--timezone",
        "UTC",
        env=exporter_env(),
    )
    for _ in range(3):
        text = exporter.get().text
    ages = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "nsml_run_age_seconds"
    ]
    assert ages and ages[0] < -8 * 3600
    warnings = [line for line in exporter.logs().splitlines() if "NSML_EXPORTER_TIMEZONE" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0]
