"""The exporter as a real process, over real HTTP, against the NSML simulator."""

from __future__ import annotations

import gzip
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.demo.population import SimRun
from exporter.demo.simulator import SimulatorServer
from tests.helpers.process import ExporterProcess, exporter_args_for, exporter_env, run_cli
from tests.helpers.runs import sim_run

STATUSES = [
    "RUN_STATE_IN_PROGRESS",
    "RUN_STATE_COMPLETED",
    "RUN_STATE_FAILED",
    "RUN_STATE_QUEUED_FOR_GPU",
    "RUN_STATE_STOPPED",
]
PROJECTS = [
    ("p-odd", 'back\\slash "q"'),
    ("p-ko", "음성인식 팀"),
    ("p-plain", "plain"),
    ("p-same", "plain"),
]


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    ]


def population(count: int, seed: int = 3) -> list[SimRun]:
    rng = random.Random(seed)
    now = time.time()
    runs = []
    for n in range(count):
        project_id, name = rng.choice(PROJECTS)
        runs.append(
            sim_run(
                project_id,
                str(n % 97),
                rng.choice(STATUSES),
                created=float(int(now - rng.uniform(60, 5 * 86400))),
                project_name=name,
                run_type=rng.choice(["NOTEBOOK", "TRAIN"]),
                creator=rng.choice(["alice", "bob", "김민준"]),
            )
        )
    # (project_id, run_name) is the identity: drop accidental repeats from the random draw.
    unique = {(r.project_id, r.run_name): r for r in runs}
    return list(unique.values())


@pytest.mark.process
def test_counts_ages_and_zero_fill_match_the_simulator_exactly(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    runs = population(700)
    simulator.sim.set_runs(runs)
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--page-size", "37"), env=exporter_env()
    )
    response = exporter.get()
    scraped_at = time.time()
    assert response.status_code == 200
    text = response.text
    assert samples(text, "nsml_up") == [({}, 1.0)]
    truth = Counter((r.project_id, r.project_name, r.outcome, r.run_type) for r in runs)
    got = {
        (s["project_id"], s["project"], s["status"], s["run_type"]): v
        for s, v in samples(text, "nsml_runs")
    }
    for key, count in truth.items():
        assert got[key] == count, key
    assert sum(got.values()) == len(runs)
    # Zero-fill: every (project, type) present has every status seen anywhere.
    pairs = {(k[0], k[3]) for k in truth}
    assert len(got) == len(pairs) * len(STATUSES)
    # Every in-progress run has its age, to within a few seconds.
    ages = {(s["project_id"], s["run"]): v for s, v in samples(text, "nsml_run_age_seconds")}
    running = [r for r in runs if r.outcome == "RUN_STATE_IN_PROGRESS"]
    assert len(ages) == len(running)
    for run in running:
        assert abs(ages[run.project_id, run.run_name] - (scraped_at - run.created)) < 5
    assert samples(text, "nsml_api_reported_runs") == [({}, float(len(runs)))]


@pytest.mark.process
def test_zero_based_api_with_first_page_0(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.first_page = 0
    simulator.sim.set_runs(population(120))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--page-size", "25", "--first-page", "0"), env=exporter_env()
    )
    text = exporter.get().text
    assert samples(text, "nsml_up") == [({}, 1.0)]
    assert sum(v for _, v in samples(text, "nsml_runs")) == len(simulator.sim.runs)


@pytest.mark.process
def test_demo_serves_metrics_landing_page_and_health(
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_factory("--demo")
    metrics = exporter.get()
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert samples(metrics.text, "nsml_up") == [({}, 1.0)]
    statuses = {s["status"] for s, _ in samples(metrics.text, "nsml_runs")}
    assert {"RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED", "RUN_STATE_FAILED"} <= statuses
    assert {s["project"] for s, _ in samples(metrics.text, "nsml_runs")} >= {"음성인식-팀"}
    landing = exporter.get("/")
    assert landing.status_code == 200
    assert 'href="metrics"' in landing.text and __version__ in landing.text
    health = exporter.get("/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert exporter.get("/nope").status_code == 404


@pytest.mark.process
def test_metrics_are_gzipped_when_asked(exporter_factory: Callable[..., ExporterProcess]) -> None:
    exporter = exporter_factory("--demo")
    raw = exporter.get(headers={"Accept-Encoding": "gzip"}, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert b"nsml_up 1.0" in gzip.decompress(raw.raw.read())


@pytest.mark.process
def test_openmetrics_is_served_when_asked(exporter_factory: Callable[..., ExporterProcess]) -> None:
    exporter = exporter_factory("--demo")
    response = exporter.get(headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


@pytest.mark.process
def test_sigterm_exits_0_promptly(exporter_factory: Callable[..., ExporterProcess]) -> None:
    exporter = exporter_factory("--demo", "--shutdown-grace", "60")
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(30) == 0  # nothing in flight: the 60 s grace is not waited
    assert "shutting down" in exporter.logs()


@pytest.mark.process
def test_demo_once_prints_the_exposition_and_exits_0() -> None:
    result = run_cli("--once", "--demo")
    assert result.returncode == 0, result.stderr
    assert "nsml_up 1.0" in result.stdout
    assert sum(v for _, v in samples(result.stdout, "nsml_runs")) > 100


@pytest.mark.process
def test_demo_with_a_long_history_reads_it_in_the_background(
    exporter_factory: Callable[..., ExporterProcess],
) -> None:
    """Bug caught: --demo-runs or --demo-latency not wired to the simulator (the demo never
    shows background reading), or the switch not shown in /metrics and the log."""
    exporter = exporter_factory(
        "--demo", "--demo-runs", "20000", "--demo-latency", "0.05",
        "--collect-timeout", "1", "--read-rate", "200",
    )  # fmt: skip
    first = exporter.get().text
    assert 'nsml_collection_mode{mode="background"} 1.0' in first
    assert "nsml_view_warming 1.0" in first
    deadline = time.monotonic() + 60
    text = first
    while "nsml_up 1.0" not in text:
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.5)
        text = exporter.get().text
    # 20,000 runs plus the few created since start, at 100 a page (the demo gateway's cap).
    assert sum(v for _, v in samples(text, "nsml_runs")) >= 20_000
    assert "reading the run list in the background" in exporter.logs()


@pytest.mark.process
def test_once_exits_1_when_the_collection_fails(tmp_path: Path) -> None:
    result = run_cli(
        "--once",
        "--base-url",
        "http://127.0.0.1:9/nsml/v1",
        "--access-key",
        "a",
        "--retries",
        "0",
        env={"NSML_EXPORTER_SECRET_KEY": "s"},
    )
    assert result.returncode == 1
    assert "nsml_up 0.0" in result.stdout
    assert 'nsml_collection_errors_total{reason="connection"} 1.0' in result.stdout
    assert "Connection refused" in result.stderr


@pytest.mark.process
def test_wrong_secret_is_an_auth_failure(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    exporter = exporter_factory(
        *exporter_args_for(simulator), env={"NSML_EXPORTER_SECRET_KEY": "wrong"}
    )
    text = exporter.get().text
    assert samples(text, "nsml_up") == [({}, 0.0)]
    # Each failed read (the one begun at start, the scrape's) counted once, by its one request.
    errors = {labels["reason"]: n for labels, n in samples(text, "nsml_collection_errors_total")}
    requests = {
        (labels["endpoint"], labels["code"]): n
        for labels, n in samples(text, "nsml_api_requests_total")
    }
    assert errors["auth"] == requests["runs", "401"] >= 1
    assert sum(errors.values()) == errors["auth"]
    assert "HTTP 401 Authentication Failed (errorCode 200): signature mismatch" in exporter.logs()


@pytest.mark.process
def test_api_key_is_sent_when_the_gateway_wants_one(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    simulator.sim.api_key = "gw-key"
    simulator.sim.set_runs(population(10))
    without = exporter_factory(*exporter_args_for(simulator), env=exporter_env())
    assert "nsml_up 0.0" in without.get().text
    with_key = exporter_factory(
        *exporter_args_for(simulator, "--api-key", "gw-key"), env=exporter_env()
    )
    assert "nsml_up 1.0" in with_key.get().text


def test_plain_requests_to_the_simulator_need_a_signature(simulator: SimulatorServer) -> None:
    response = requests.get(simulator.base_url + "/projects/runs", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Authentication Failed"


@pytest.mark.process
def test_metrics_endpoint_serves_what_prometheus_client_would(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """The server's fast encoder is in use, and its output parses like the library's."""
    simulator.sim.set_runs(population(50))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--cache-seconds", "60"), env=exporter_env()
    )
    text = exporter.get().text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"nsml_up", "nsml_runs", "nsml_run_age_seconds", "process_cpu_seconds"} <= families
    assert text.index("# HELP nsml_up") < text.index("# HELP process_cpu_seconds_total")


def test_simulator_fast_path_serves_the_same_page_as_its_reference_path() -> None:
    import json as _json

    from exporter.demo.population import generate_population
    from tests.fake_api import FaultySimulator

    sim = FaultySimulator("a", "s", generate_population(250, time.time(), future_rate=0))
    for page in (1, 2, 3, 4):
        fast = _json.loads(sim.run_list_bytes(page, 70))
        assert fast == sim.run_list_page(page, 70, None)
    assert _json.loads(sim.run_list_bytes(9, 70)) == {"runList": [], "totalCount": 250}


@pytest.mark.process
def test_json_logs_are_one_object_per_line(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    import json as _json

    simulator.sim.set_runs(population(20))
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--log-format", "json", "--log-level", "debug"),
        env=exporter_env(),
    )
    exporter.get()
    simulator.sim.secret_key = "rotated"  # a failure, so a warning is logged too
    exporter.get()
    time.sleep(0.1)
    entries = [_json.loads(line) for line in exporter.logs().splitlines() if line.strip()]
    assert {"time", "level", "logger", "msg"} <= set(entries[0])
    assert any(e["level"] == "warning" and "collection failed (auth)" in e["msg"] for e in entries)
    assert any(e["level"] == "info" and "serving http://" in e["msg"] for e in entries)


@pytest.mark.process
def test_finished_run_histograms_match_the_simulator_exactly(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Durations and finished ages of runs in several finished statuses (QUEUED_FOR_GPU and
    PREEMPTED are in no document) bucketed exactly as the simulator's runs say, and each
    project's newest createTime exact. Every time is 30 s off a whole minute, so the few seconds
    a collection takes never move a run across a bucket bound (all whole minutes)."""
    rng = random.Random(11)
    now = float(int(time.time()))
    runs = []
    for n in range(400):
        project_id, name = rng.choice(PROJECTS)
        status = rng.choice([*STATUSES, "RUN_STATE_PREEMPTED"])
        duration = rng.randrange(0, 4 * 1440) * 60 + 30.0
        finished_ago = rng.randrange(0, 40 * 1440) * 60 + 30.0
        extra = {} if status == "RUN_STATE_IN_PROGRESS" else {"duration": duration}
        runs.append(
            sim_run(
                project_id,
                str(n),
                status,
                created=now - finished_ago - duration,
                project_name=name,
                run_type=rng.choice(["NOTEBOOK", "TRAIN"]),
                **extra,
            )
        )
    simulator.sim.set_runs(runs)
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--page-size", "50"), env=exporter_env()
    )
    text = exporter.get().text
    assert "nsml_up 1.0" in text

    bounds = {
        "nsml_run_duration_seconds": [
            60,
            300,
            900,
            1800,
            3600,
            7200,
            14400,
            28800,
            86400,
            172800,
            604800,
        ],
        "nsml_run_finished_age_seconds": [900, 3600, 21600, 86400, 604800, 2592000],
    }
    for family, les in bounds.items():
        truth: Counter[tuple[str, str, str, str]] = Counter()
        for run in runs:
            if run.outcome == "RUN_STATE_IN_PROGRESS":
                continue
            assert run.duration is not None
            seconds = (
                run.duration
                if family == "nsml_run_duration_seconds"
                else (now - run.created - run.duration)
            )
            key = (run.project_id, run.run_type, run.outcome)
            for le in [*les, float("inf")]:
                if seconds <= le:
                    truth[(*key, floatToGoString(le))] += 1  # as client libraries write le
        served = {
            (labels["project_id"], labels["run_type"], labels["status"], labels["le"]): value
            for labels, value in samples(text, f"{family}_bucket")
        }
        assert {k: v for k, v in served.items() if v} == dict(truth), family
        assert not any(key[2] == "RUN_STATE_IN_PROGRESS" for key in served)
        assert {key[2] for key in served} >= {"RUN_STATE_QUEUED_FOR_GPU", "RUN_STATE_PREEMPTED"}

    newest: dict[str, float] = {}
    for run in runs:
        newest[run.project_id] = max(newest.get(run.project_id, 0.0), run.created)
    served_newest = {
        labels["project_id"]: value
        for labels, value in samples(text, "nsml_project_last_created_timestamp_seconds")
    }
    assert served_newest == newest


def test_the_packaged_simulator_takes_no_fault_commands() -> None:
    """The fault switchboard is test code (tests/fake_api.py): the installed simulator accepts
    no command, from anyone."""
    import exporter.demo.simulator as packaged
    from exporter.demo.simulator import Simulator

    assert not hasattr(packaged, "Fault")
    server = SimulatorServer(Simulator("a", "s")).start()
    try:
        root = server.base_url.removesuffix("/nsml/v1")
        answer = requests.post(root + "/_sim/fault", json={"kind": "hang"}, timeout=5)
        assert answer.status_code == 501
        assert requests.get(root + "/_sim/stats", timeout=5).status_code == 200  # read-only
    finally:
        server.stop()


@pytest.mark.process
def test_a_port_in_use_is_one_line_exit_2_and_no_api_request(simulator: SimulatorServer) -> None:
    """Bugs caught: a port in use blamed on another setting, or given a traceback. Reading now
    begins once the port is ours, so no API request is made; before, one raced the exit and
    was made now and then (this check could not catch that reliably)."""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        port = str(held.getsockname()[1])
        result = run_cli(
            *exporter_args_for(simulator, "--listen-address", "127.0.0.1", "--port", port),
            env=exporter_env(),
        )
    finally:
        held.close()
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("nsml-exporter:")]
    assert "(--port)" in line and f"127.0.0.1:{port}" in line
    assert simulator.sim.requests["all"] == 0


@pytest.mark.process
def test_reading_begins_when_the_exporter_starts_not_at_the_first_scrape(
    simulator: SimulatorServer, exporter_factory: Callable[..., ExporterProcess]
) -> None:
    """Bug caught (issue 26): nothing read until the first scrape, which then waited for it."""
    simulator.sim.set_runs(population(30))
    exporter_factory(*exporter_args_for(simulator), env=exporter_env())  # answers /healthz
    deadline = time.monotonic() + 10
    while simulator.sim.requests["runs"] == 0:
        assert time.monotonic() < deadline, "no page read without a scrape"
        time.sleep(0.05)


@pytest.mark.process
def test_an_address_not_of_this_machine_is_blamed_on_the_listen_address() -> None:
    """Bug caught (issue 28): `--listen-address 10.9.9.9` (no address of this machine)
    blamed on `--port`, which the user then changes in vain."""
    result = run_cli("--demo", "--listen-address", "192.0.2.1", "--port", "0")
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("nsml-exporter:")]
    assert "(--listen-address)" in line and "192.0.2.1:0" in line and "(--port)" not in line


@pytest.mark.process
def test_ctrl_c_during_once_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Bug caught (issue 28): Ctrl-C during `--once` printed a 41-line KeyboardInterrupt
    traceback (and exit 1), as if the exporter had crashed. The exporter gets SIGINT's default
    disposition, as from a terminal: a shell that runs the tests in the background ignores
    SIGINT for them, and a process that starts with SIGINT ignored never sees Ctrl-C."""
    import subprocess
    import sys

    from tests.helpers.process import process_env

    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--once", "--demo-latency", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(),
        # Only signal.signal runs in the child before exec: no lock another thread could hold.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # started: it reads its first page now, which takes 5 s
        if "demo: NSML simulator at" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "nsml-exporter: interrupted"
