"""GPU and capacity details: what is read, when, within which budget, and what a failure leaves.
Units over a fake API and a fake clock first, then the exporter against the simulator over
HTTP: the demo's projects, GPU servers and nodes, no secret anywhere, `nsml_up` untouched."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collection.details import RETRY_BASE, RunDetails
from exporter.demo.population import PROJECTS
from exporter.demo.resources import EMPTY_PROJECT, GPU_SERVERS, SECRET_MARKER
from exporter.errors import ConnectionFailedError, HTTPStatusError, RequestTimeoutError
from tests.fake_api import FaultyServer
from tests.helpers.concurrency import InFlight
from tests.helpers.process import ExporterProcess, exporter_args_for, exporter_env, run_cli
from tests.helpers.runs import api_run, sim_run
from tests.helpers.settings import make_settings

Key = tuple[str, str]


class FakeApi:
    """The three detail endpoints, recorded; `fail` maps (endpoint, run name) to an error."""

    page_size = 100

    def __init__(self, nodes: int = 2) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], Exception] = {}
        self.nodes = nodes
        self.projects: list[dict[str, Any]] = [
            {"projectId": "p1", "projectName": "one", "status": "CREATED", "nodeCount": 3},
            {"projectId": "p2", "projectName": "two", "status": "CHANGING"},
        ]
        self.lock = threading.Lock()
        self.status = ""

    def _call(self, endpoint: str, name: str) -> None:
        with self.lock:
            self.calls.append((endpoint, name))
        if (endpoint, name) in self.fail:
            raise self.fail[endpoint, name]

    def _in_time(self, deadline: float) -> None:
        if time.monotonic() > deadline:  # as the real client: no request past its deadline
            raise RequestTimeoutError("collection deadline reached")

    def get_projects(self, page: int, deadline: float) -> dict[str, Any]:
        self._in_time(deadline)
        self._call("projects", "")
        return {"projects": self.projects, "totalCount": len(self.projects)}

    def get_run(self, project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
        self._in_time(deadline)
        self._call("run", run_name)
        detail = {"engFullName": f"GPU of {run_name}", "gpuSvrCode": 7, "imageType": "BASE"}
        return {**detail, "status": self.status} if self.status else detail

    def get_nodes(self, project_id: str, run_name: str, page: int, deadline: float) -> Any:
        self._in_time(deadline)
        self._call("nodes", run_name)
        states = ["RUNNING"] * (self.nodes - 1) + ["PENDING"]
        got = states[(page - 1) * 100 : page * 100]
        return {"nodes": [{"state": s} for s in got], "totalCount": self.nodes}

    def of(self, endpoint: str) -> list[str]:
        return [name for kind, name in self.calls if kind == endpoint]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def details(api: FakeApi, clock: Clock | None = None, **settings: Any) -> RunDetails:
    values: dict[str, Any] = {"concurrency": 1}  # one worker: reads in plan order
    values.update(settings)
    return RunDetails(api, make_settings(**values), clock or Clock())  # type: ignore[arg-type]


def keys(*names: str) -> list[Key]:
    return [("p1", name) for name in names]


def test_a_detail_is_read_once_and_kept_while_the_run_has_series() -> None:
    api = FakeApi()
    runs = details(api)
    for _ in range(3):
        runs.refresh(keys("1", "2"))
    assert sorted(api.of("run")) == ["1", "2"]
    view = runs.view(keys("1", "2"))
    assert view.info[("p1", "1")].gpu_server == "GPU of 1"
    assert view.info[("p1", "1")].gpu_server_code == "7"
    assert view.info[("p1", "1")].image_type == "BASE"
    assert view.nodes[("p1", "1")] == {"RUNNING": 1, "PENDING": 1}
    assert view.pending == 0
    # Run 1 loses its series: forgotten, and read again if it comes back.
    assert set(runs.view(keys("2")).info) == {("p1", "2")}
    runs.refresh(keys("1", "2"))
    assert sorted(api.of("run")) == ["1", "1", "2"]


@pytest.mark.parametrize(("elapsed", "read_again"), [(299.9, False), (300.0, True)])
def test_node_lists_are_read_again_after_nodes_refresh(elapsed: float, read_again: bool) -> None:
    """Bug caught: `>` for `>=` at NODES_REFRESH, or node lists kept forever like details."""
    api, clock = FakeApi(), Clock()
    runs = details(api, clock, nodes_refresh=300, status_refresh=1000)
    runs.refresh(keys("1"))
    clock.now += elapsed
    runs.refresh(keys("1"))
    assert api.of("nodes") == ["1", "1"] if read_again else ["1"]
    assert api.of("run") == ["1"]


class FollowedStore:
    """What details tell the store: statuses, and runs gone."""

    def __init__(self) -> None:
        self.statuses: list[tuple[Key, str]] = []
        self.removed: list[Key] = []

    def set_status(self, key: Key, status: str, at: float) -> bool:
        self.statuses.append((key, status))
        return True

    def remove(self, key: Key) -> bool:
        self.removed.append(key)
        return True


class Turns:
    """A pace that counts the requests that waited their turn."""

    def __init__(self) -> None:
        self.waited = 0

    def __call__(self) -> None:
        self.waited += 1


@pytest.mark.parametrize(("elapsed", "read_again"), [(39.9, False), (40.0, True)])
def test_a_detail_is_read_again_after_status_refresh_and_its_status_goes_to_the_store(
    elapsed: float, read_again: bool
) -> None:
    """Bugs caught: a run that finished still shown in progress until the next full read
    (details read once, issue 26), the status not given to the store, `>` for `>=`, or a
    request that skips the reader's pace (READ_RATE)."""
    api, clock, store, turns = FakeApi(), Clock(), FollowedStore(), Turns()
    api.status = "RUN_STATE_COMPLETED"
    runs = details(api, clock, status_refresh=40)
    runs.follow(store, turns)
    runs.refresh(keys("1"))
    clock.now += elapsed
    runs.refresh(keys("1"))
    assert api.of("run") == (["1", "1"] if read_again else ["1"])
    assert store.statuses == [(("p1", "1"), "RUN_STATE_COMPLETED")] * len(api.of("run"))
    assert turns.waited == len(api.calls)  # every request waited its turn, projects too


def test_a_detail_that_fails_once_is_retried_like_a_page() -> None:
    """Bug caught: details read once, not through the retrying path pages take (issue 26), so
    one 503 left the run pending for a back-off of 30 s."""

    class FlakyApi(FakeApi):
        def get_run(self, project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
            if not self.of("run"):
                self._call("run", run_name)
                raise HTTPStatusError("HTTP 503", status=503, retryable=True)
            return super().get_run(project_id, run_name, deadline)

    api = FlakyApi()
    runs = details(api, retries=1)
    runs.refresh(keys("1"))
    assert api.of("run") == ["1", "1"]
    assert runs.view(keys("1")).pending == 0


def test_waiting_for_turns_never_eats_a_requests_time() -> None:
    """Bug caught (seen in the benchmark): one COLLECT_TIMEOUT for a whole refresh whose
    requests wait their turn at READ_RATE, so later reads failed as "collection deadline
    reached" and backed off."""
    api, store = FakeApi(), FollowedStore()
    runs = details(api, collect_timeout=0.2)
    runs.follow(store, lambda: time.sleep(0.1))  # three turns outlast COLLECT_TIMEOUT
    runs.refresh(keys("1", "2", "3"))
    assert runs.view(keys("1", "2", "3")).pending == 0


def test_a_run_whose_detail_is_gone_leaves_the_store() -> None:
    """Bug caught: a deleted run in progress counted until the next full read."""
    api, store = FakeApi(), FollowedStore()
    api.fail["run", "2"] = HTTPStatusError("HTTP 404", status=404)
    runs = details(api)
    runs.follow(store, Turns())
    runs.refresh(keys("1", "2"))
    assert store.removed == [("p1", "2")]


def test_the_planner_and_the_view_run_concurrently() -> None:
    """Bug caught: `plan()` reading the failures outside the lock while `view()` deletes from
    them (a KeyError that ended the refresh thread, issue 26)."""
    api = FakeApi()
    for name in map(str, range(0, 40, 2)):
        api.fail["run", name] = ConnectionFailedError("refused")
    clock = Clock()
    runs = details(api, clock)
    unlocked: list[str] = []

    class Guarded(dict):  # type: ignore[type-arg]
        """The failures, noting any read or write made without the details' lock."""

        def _check(self, what: str) -> None:
            if not runs._lock.locked():
                unlocked.append(what)

        def __getitem__(self, key: Any) -> Any:
            self._check("read")
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            self._check("read")
            return super().__contains__(key)

        def get(self, key: Any, default: Any = None) -> Any:
            self._check("read")
            return super().get(key, default)

        def __delitem__(self, key: Any) -> None:
            self._check("delete")
            super().__delitem__(key)

    runs._failing = Guarded()
    runs.refresh(keys(*map(str, range(40))))
    errors: list[BaseException] = []
    stop = threading.Event()

    def planner() -> None:
        try:
            while not stop.is_set():
                clock.now += RETRY_BASE  # every back-off over: each failure is looked at
                runs.plan(keys(*map(str, range(40))))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=planner)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch every few bytecodes: the race shows
    thread.start()
    try:
        for round_ in range(4000):
            runs.view(keys(*map(str, range(round_ % 40, 40))))  # forgets the failures below
            if round_ % 40 == 0:
                runs.refresh(keys(*map(str, range(40))))  # fails half the runs again
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert unlocked == []


@pytest.mark.parametrize(
    ("budget", "read", "pending"),
    [
        (0, [], 3),
        (1, [("run", "old")], 3),
        (2, [("run", "old"), ("nodes", "old")], 2),
        (4, [("run", "old"), ("nodes", "old"), ("run", "mid"), ("nodes", "mid")], 1),
        (6, None, 0),
        (50, None, 0),
    ],
)
def test_detail_requests_caps_each_refresh_oldest_runs_first(
    budget: int, read: list[tuple[str, str]] | None, pending: int
) -> None:
    """Bugs caught: the cap off by one, or spent on the newest runs first."""
    api = FakeApi()
    runs = details(api, detail_requests=budget)
    series = keys("old", "mid", "new")  # oldest first, as the snapshot orders them
    runs.refresh(series)
    made = [call for call in api.calls if call[0] != "projects"]
    assert len(made) == min(budget, 6)
    if read is not None:
        assert made == read
    assert runs.view(series).pending == pending


def test_a_node_list_of_several_pages_spends_one_request_a_page() -> None:
    api = FakeApi(nodes=250)  # pages of 100: three requests
    runs = details(api, detail_requests=3, page_size=100)
    runs.refresh(keys("1"))
    assert api.calls[1:] == [("run", "1"), ("nodes", "1"), ("nodes", "1")]
    assert runs.view(keys("1")).pending == 1  # the list was not read whole: not kept


def test_a_node_list_of_exactly_two_full_pages_costs_two_requests() -> None:
    """Bug caught: `>` for `>=` against totalCount, which asks for an empty third page."""
    api = FakeApi(nodes=200)
    runs = details(api, page_size=100)
    runs.refresh(keys("1"))
    assert api.of("nodes") == ["1", "1"]
    assert runs.view(keys("1")).nodes[("p1", "1")] == {"RUNNING": 199, "PENDING": 1}


def test_each_label_of_a_run_comes_from_its_own_field() -> None:
    """Bugs caught: two fields swapped between labels (image type as the GPU server); a run
    whose detail and node list are not read yet failing the scrape or served with another's
    (a lookup's default lost); a project without a node count served as 0."""
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.collection.details import DetailsView, ProjectInfo, RunInfo
    from exporter.collection.details_families import details_families
    from exporter.collection.snapshot import Record

    series = [
        Record("p1", "name-p1", "7", "TRAIN", "RUN_STATE_IN_PROGRESS", "u", 0.0, 0.0),
        Record("p1", "name-p1", "8", "TRAIN", "RUN_STATE_IN_PROGRESS", "u", 0.0, 0.0),
    ]
    view = DetailsView(
        (ProjectInfo("p1", "name-p1", "CHANGING", 3), ProjectInfo("p2", "name-p2", "OK", None)),
        {("p1", "7"): RunInfo("NVIDIA A100 80GB x8", "1308", "CUSTOM")},
        {("p1", "7"): {"RUNNING": 2, "PENDING": 1}},
        pending=4,
    )
    registry = CollectorRegistry()

    class Families:
        def collect(self) -> Any:
            return details_families(view, series)

    registry.register(Families())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert (
        'nsml_run_info{gpu_server="NVIDIA A100 80GB x8",gpu_server_code="1308",'
        'image_type="CUSTOM",project="name-p1",project_id="p1",run="7"} 1.0'
    ) in text
    assert 'nsml_run_nodes{project="name-p1",project_id="p1",run="7",state="PENDING"} 1.0' in text
    assert 'nsml_run_nodes{project="name-p1",project_id="p1",run="7",state="RUNNING"} 2.0' in text
    assert 'nsml_project_info{project="name-p1",project_id="p1",status="CHANGING"} 1.0' in text
    assert 'nsml_project_nodes{project="name-p1",project_id="p1"} 3.0' in text
    assert "nsml_run_details_pending 4.0" in text
    assert 'run="8"' not in text  # nothing known of it yet, and nothing made up
    assert 'nsml_project_info{project="name-p2",project_id="p2",status="OK"} 1.0' in text
    assert 'nsml_project_nodes{project="name-p2"' not in text


def test_a_run_gone_404_is_dropped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.fail["run", "1"] = HTTPStatusError("run 1: HTTP 404", status=404)
    runs = details(api)
    runs.refresh(keys("1", "2"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    view = runs.view(keys("1", "2"))
    assert set(view.info) == {("p1", "2")}
    assert view.pending == 1


def test_a_failed_read_leaves_the_run_pending_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi()
    api.fail["nodes", "1"] = ConnectionFailedError("nodes of run 1: refused")
    api.fail["run", "2"] = HTTPStatusError("run 2: HTTP 503", status=503)
    runs = details(api)
    runs.refresh(keys("1", "2", "3"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "details: 2 of 6 reads failed (the runs stay pending); first: nodes of run 1: refused"
    ]
    assert runs.view(keys("1", "2", "3")).pending == 2


def test_the_project_list_failing_makes_it_absent_until_it_is_read_again() -> None:
    api = FakeApi()
    runs = details(api)
    runs.refresh([])
    assert [p.project_id for p in runs.view([]).projects or ()] == ["p1", "p2"]
    api.fail["projects", ""] = ConnectionFailedError("projects page 1: refused")
    runs.refresh([])
    assert runs.view([]).projects is None
    del api.fail["projects", ""]
    runs.refresh([])
    assert runs.view([]).projects is not None


def test_projects_honour_the_projects_setting_by_id_or_name() -> None:
    api = FakeApi()
    runs = details(api, projects="p2,one")
    runs.refresh([])
    assert {p.project_id for p in runs.view([]).projects or ()} == {"p1", "p2"}
    runs = details(api, projects="two")
    runs.refresh([])
    assert [(p.project_id, p.status, p.nodes) for p in runs.view([]).projects or ()] == [
        ("p2", "CHANGING", None)
    ]


def test_only_one_background_refresh_runs_at_a_time() -> None:
    api = FakeApi()
    gate = threading.Event()
    real = api.get_projects

    def slow(page: int, deadline: float) -> dict[str, Any]:
        gate.wait(5)
        return real(page, deadline)

    api.get_projects = slow  # type: ignore[method-assign]
    runs = details(api)
    for _ in range(5):
        runs.refresh_in_background(keys("1"))
    gate.set()
    time.sleep(0.5)
    assert api.of("projects") == [""]


def test_closing_during_a_refresh_ends_it_quietly() -> None:
    """Bug caught (by the SIGTERM test, now and then): close() cancelled a refresh's reads, and
    its thread died with a CancelledError traceback."""
    api = FakeApi()
    gate = threading.Event()
    started = threading.Event()
    real = api.get_run

    def slow(project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
        started.set()
        gate.wait(5)
        return real(project_id, run_name, deadline)

    api.get_run = slow  # type: ignore[method-assign]
    runs = details(api)
    died: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_value)
    try:
        runs.refresh_in_background(keys(*map(str, range(10))))
        assert started.wait(5)
        runs.close()
        gate.set()
        time.sleep(0.5)
        runs.refresh_in_background(keys("1"))  # closed: starts nothing
    finally:
        threading.excepthook = previous
    assert died == []
    assert api.of("run") == ["0"]


# -- the exporter and the simulator, over HTTP ------------------------------------------------


def families(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.mark.process
def test_demo_once_shows_projects_gpu_servers_and_nodes_and_no_secret() -> None:
    result = run_cli("--demo", "--once", "--detail-requests", "1000", "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    found = families(result.stdout)
    projects = {s.labels["project"]: s.labels["status"] for s in found["nsml_project_info"]}
    assert projects == {name: "CREATED" for _, name in (*PROJECTS, EMPTY_PROJECT)}
    nodes = {s.labels["project"]: s.value for s in found["nsml_project_nodes"]}
    assert nodes[EMPTY_PROJECT[1]] == 0  # the project without runs is listed, with no nodes
    # nodeCount is the RUNNING nodes of the project's runs
    running: dict[str, float] = {}
    for sample in found["nsml_run_nodes"]:
        if sample.labels["state"] == "RUNNING":
            project = sample.labels["project"]
            running[project] = running.get(project, 0) + sample.value
    assert {p: v for p, v in nodes.items() if v} == running
    series = {s.labels["run"] + "@" + s.labels["project_id"] for s in found["nsml_run_age_seconds"]}
    info = {s.labels["run"] + "@" + s.labels["project_id"] for s in found["nsml_run_info"]}
    assert info == series  # the same runs as the per-run series
    assert found["nsml_run_details_pending"][0].value == 0
    states = {s.labels["state"] for s in found["nsml_run_nodes"]}
    assert states == {"RUNNING", "PENDING"}  # multi-node runs with a node still starting
    catalogue = {server.name: str(server.code) for server in GPU_SERVERS}
    for sample in found["nsml_run_info"]:
        assert catalogue[sample.labels["gpu_server"]] == sample.labels["gpu_server_code"]
        assert sample.labels["image_type"] in ("BASE", "CUSTOM")
    requests = {
        (s.labels["endpoint"], s.labels["code"]): s.value for s in found["nsml_api_requests"]
    }
    assert requests["run", "200"] == len(series)
    assert requests["nodes", "200"] == len(series)
    assert requests["projects", "200"] == 1
    assert SECRET_MARKER not in result.stdout + result.stderr


@pytest.mark.process
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_from_a_run_detail_reaches_metrics_or_the_debug_log(
    simulator: FaultyServer,
    exporter_factory: Callable[..., ExporterProcess],
    log_format: str,
) -> None:
    now = time.time()
    simulator.sim.set_runs(
        [sim_run("p1", str(n), "RUN_STATE_IN_PROGRESS", created=now - 3600 - n) for n in range(5)]
    )
    exporter = exporter_factory(
        *exporter_args_for(simulator, "--log-level", "debug", "--log-format", log_format),
        env=exporter_env(),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = exporter.get().text
        if "nsml_run_details_pending 0.0" in text:
            break
        time.sleep(0.2)
    assert "nsml_run_details_pending 0.0" in text
    assert len(families(text)["nsml_run_info"]) == 5
    assert SECRET_MARKER not in text
    assert SECRET_MARKER not in exporter.logs()
    assert simulator.sim.requests["run"] == 5  # each detail read once, for all those scrapes


@pytest.mark.process
@pytest.mark.parametrize("endpoint", ["projects", "run", "nodes"])
def test_a_failing_detail_endpoint_never_fails_the_collection(
    simulator: FaultyServer,
    exporter_factory: Callable[..., ExporterProcess],
    endpoint: str,
) -> None:
    now = time.time()
    simulator.sim.set_runs(
        [sim_run("p1", str(n), "RUN_STATE_IN_PROGRESS", created=now - 3600 - n) for n in range(3)]
    )
    simulator.sim.resource_faults[endpoint] = 503
    exporter = exporter_factory(*exporter_args_for(simulator), env=exporter_env())
    for _ in range(3):
        found = families(exporter.get().text)
        time.sleep(0.3)
    assert found["nsml_up"][0].value == 1
    assert len(found["nsml_run_age_seconds"]) == 3
    requests = {
        (s.labels["endpoint"], s.labels["code"]): s.value for s in found["nsml_api_requests"]
    }
    assert requests[endpoint, "503"] >= 1
    if endpoint == "projects":
        assert "nsml_project_info" not in found
        assert found["nsml_run_details_pending"][0].value == 0
    else:
        assert found["nsml_project_info"]
        assert found["nsml_run_details_pending"][0].value == 3
    assert "details:" in exporter.logs()


@pytest.mark.process
def test_details_off_reads_no_detail_and_serves_no_detail_family() -> None:
    result = run_cli("--demo", "--once", "--details", "false")
    assert result.returncode == 0, result.stderr
    found = families(result.stdout)
    for name in (
        "nsml_project_info",
        "nsml_run_info",
        "nsml_run_nodes",
        "nsml_run_details_pending",
    ):
        assert name not in found
    assert {s.labels["endpoint"] for s in found["nsml_api_requests"]} == {"runs"}


# -- issue 22: starved budgets, capped pages, oversized node lists ----------------------------


def test_runs_that_keep_failing_back_off_so_younger_runs_get_their_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bug caught (issue 22, item 2): the 30 oldest runs failing every time spend the whole
    DETAIL_REQUESTS budget, so 101 runs stay pending for ever."""
    api, clock = FakeApi(), Clock()
    names = [str(n) for n in range(101)]  # oldest first
    for name in names[:30]:
        api.fail["run", name] = HTTPStatusError("HTTP 500", status=500)
    runs = details(api, clock, detail_requests=50)
    pending = []
    with caplog.at_level(logging.WARNING):
        for _ in range(10):
            runs.refresh(keys(*names))
            pending.append(runs.view(keys(*names)).pending)
            clock.now += 15  # a scrape interval
    assert pending[-1] == 30  # only the failing runs
    assert pending == sorted(pending, reverse=True)
    named = [r.getMessage() for r in caplog.records if "keep failing" in r.getMessage()]
    # Each failing run named once, in the line of the refresh where it failed a third time.
    assert sum(int(line.split("details: ")[1].split(" ")[0]) for line in named) == 30
    # A failing run is asked again after its back-off (30 s, then 60 s): at 0, 30 and 90 s of
    # these 150, not at every refresh (10).
    assert api.of("run").count("0") == 3


def test_a_run_gone_404_is_asked_again_only_once_the_run_list_shows_it_changed() -> None:
    """Bug caught (issue 22, item 2): a 404 forgotten at once, so the gone run is asked again
    on every refresh and spends the budget."""
    api = FakeApi()
    api.fail["run", "9"] = HTTPStatusError("HTTP 404", status=404)
    runs = details(api)
    versions = {("p1", "9"): ("RUN_STATE_IN_PROGRESS", 1.0)}
    for _ in range(3):
        runs.refresh(keys("9"), versions)
    assert api.of("run") == ["9"]
    runs.refresh(keys("9"), {("p1", "9"): ("RUN_STATE_COMPLETED", 2.0)})
    assert api.of("run") == ["9", "9"]


def test_projects_and_node_lists_follow_a_gateway_that_caps_pages() -> None:
    """Bug caught (issue 22, item 1): a list cut at the first page shorter than PAGE_SIZE, so 2
    of 5 projects were served, and 2 of a run's 4 nodes, with nsml_up 1."""
    from exporter.demo.resources import EMPTY_PROJECT, hardware
    from exporter.nsml.api import NsmlApi
    from tests.fake_api import FaultyServer, FaultySimulator
    from tests.helpers.runs import frozen_runs
    from tests.helpers.settings import ACCESS, SECRET

    sim = FaultySimulator(ACCESS, SECRET, max_page_size=2)
    sim.set_runs(frozen_runs(40, time.time() - 1000))
    server = FaultyServer(sim).start()
    try:
        api = NsmlApi(make_settings(base_url=server.base_url, page_size=1000))
        big = next(
            r for r in sim.runs if r.run_type == "TRAIN" and hardware(r)[1] == 4
        )  # a training on four nodes
        runs = RunDetails(api, make_settings(detail_requests=50, concurrency=1))
        key = (big.project_id, big.run_name)
        runs.refresh([key])
        view = runs.view([key])
        assert view.projects is not None and len(view.projects) == 5
        assert EMPTY_PROJECT[0] in {p.project_id for p in view.projects}
        assert sum(view.nodes[key].values()) == 4
        api.close()
    finally:
        server.stop()


def test_a_node_list_that_ignores_page_size_is_refused_not_held() -> None:
    """Bug caught (issue 22, item 5): a node list of 100,000 nodes (8 MB, under
    MAX_RESPONSE_BYTES) decoded whole; the details' endpoints now stop at 1 MiB."""
    from exporter.errors import InvalidResponseError
    from exporter.nsml.api import DETAIL_MAX_BYTES, NsmlApi
    from tests.helpers.http import FakeAdapter

    node = {"nodeId": "n" * 40, "state": "RUNNING", "resourceType": "NVIDIA A100 80GB x8"}
    body = json.dumps({"nodes": [node] * 100_000, "totalCount": 100_000}).encode()
    assert DETAIL_MAX_BYTES < len(body) < make_settings().max_response_bytes
    api = NsmlApi(make_settings(), adapter=FakeAdapter(lambda page, size: (200, body)))
    with pytest.raises(InvalidResponseError, match="over the details' limit"):
        api.get_nodes("p1", "1", 1, time.monotonic() + 10)
    small = json.dumps({"nodes": [node] * 1000, "totalCount": 1000}).encode()
    api = NsmlApi(make_settings(), adapter=FakeAdapter(lambda page, size: (200, small)))
    assert len(api.get_nodes("p1", "1", 1, time.monotonic() + 10)["nodes"]) == 1000


def test_a_run_whose_detail_turns_404_loses_its_node_states() -> None:
    """Bug caught (issue 22's survivors): a run gone (404) keeping its old node states in
    nsml_run_nodes."""
    api, clock = FakeApi(), Clock()
    api.fail["run", "1"] = HTTPStatusError("HTTP 500", status=500)
    runs = details(api, clock)
    runs.refresh(keys("1"))
    assert ("p1", "1") in runs.view(keys("1")).nodes  # the node list was read
    api.fail["run", "1"] = HTTPStatusError("HTTP 404", status=404)
    clock.now += RETRY_BASE
    runs.refresh(keys("1"))
    assert api.of("run") == ["1", "1"]
    assert ("p1", "1") not in runs.view(keys("1")).nodes


def test_every_collection_starts_a_details_refresh_not_only_the_first() -> None:
    """Bug caught (issue 22's survivors): only the first collection starting a background
    refresh, so node lists were never read again."""
    from exporter.collection.collector import NsmlCollector
    from exporter.selfmetrics import ExporterMetrics
    from tests.fake_source import FakeSource
    from tests.helpers.runs import run_list

    api = FakeApi()
    settings = make_settings(nodes_refresh=0.01, concurrency=1)
    runs = RunDetails(api, settings)  # type: ignore[arg-type]
    source = FakeSource(lambda deadline: run_list([api_run("p1", "1", "RUN_STATE_IN_PROGRESS")]))
    collector = NsmlCollector(settings, source, ExporterMetrics(), details=runs)
    try:
        for _ in range(3):
            collector.shared.get()
            deadline = time.monotonic() + 5
            while runs._running is not None and runs._running.is_alive():
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.02)  # past NODES_REFRESH
        assert len(api.of("projects")) == 3
        assert len(api.of("nodes")) == 3
    finally:
        collector.close()
        runs.close()


def test_a_detail_without_a_gpu_server_code_gets_an_empty_label() -> None:
    """Bug caught (issue 27): a detail with no `gpuSvrCode` labelled `gpu_server_code="None"`,
    a value no query expects."""

    class NoCode(FakeApi):
        def get_run(self, project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
            detail = super().get_run(project_id, run_name, deadline)
            del detail["gpuSvrCode"]
            return detail

    runs = details(NoCode())
    runs.refresh(keys("1"))
    assert runs.view(keys("1")).info[("p1", "1")].gpu_server_code == ""


class BareApi(FakeApi):
    """Details with no more than the API must send (no GPU name, image type or node state),
    each request noted with the project it asked of."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, str]] = []

    def get_run(self, project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
        self.asked.append(("run", project_id, run_name))
        return {"status": "RUN_STATE_COMPLETED"}

    def get_nodes(self, project_id: str, run_name: str, page: int, deadline: float) -> Any:
        self.asked.append(("nodes", project_id, run_name))
        return {"nodes": [{}], "totalCount": 1}


def test_a_bare_detail_reads_as_empty_labels_and_its_status_goes_to_the_store() -> None:
    """Bugs caught: a run's detail or nodes asked of another project (the run's name as its
    project), a missing GPU name, image type or node state served as "None" or made up, or
    the status a detail gives passed on without the time it was read."""

    class Store:
        def __init__(self) -> None:
            self.statuses: list[tuple[Key, str, float]] = []

        def set_status(self, key: Key, status: str, when: float) -> None:
            self.statuses.append((key, status, when))

        def remove(self, key: Key) -> None:
            raise AssertionError("nothing is gone here")

    api = BareApi()
    runs = RunDetails(api, make_settings(concurrency=1), Clock(), lambda: 1234.5)  # type: ignore[arg-type]
    store = Store()
    runs.follow(store, lambda: None)  # type: ignore[arg-type]
    key = ("proj-7", "42")
    runs.refresh([key])
    view = runs.view([key])
    assert api.asked == [("run", "proj-7", "42"), ("nodes", "proj-7", "42")]
    (info,) = view.info.values()
    assert (info.gpu_server, info.gpu_server_code, info.image_type) == ("", "", "")
    assert view.nodes[key] == {"": 1}
    assert store.statuses == [(key, "RUN_STATE_COMPLETED", 1234.5)]


def test_reads_that_keep_failing_are_named_by_what_they_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bugs caught: a failing node list named as a detail (or the reverse), the names run
    together, or the count of reads named wrong: the one line an operator reads to find which
    runs the API cannot serve."""
    api, clock = FakeApi(), Clock()
    api.fail["run", "1"] = HTTPStatusError("HTTP 500", status=500)
    api.fail["nodes", "2"] = HTTPStatusError("HTTP 500", status=500)
    runs = details(api, clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            runs.refresh(keys("1", "2"))
            clock.now += 3600  # past every back-off
    named = [r.getMessage() for r in caplog.records if "keep failing" in r.getMessage()]
    assert named == [
        "details: 2 read(s) keep failing, asked again only after a back-off: "
        "nodes of run 2 of project p1, detail of run 1 of project p1"
    ]


def test_the_project_list_is_read_field_by_field_and_its_failure_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bugs caught: a project's nodeCount, name or status dropped on the way from the API's
    list to `nsml_project_info` and `nsml_project_nodes` (a missing one made up), or the list's
    failure said without what failed."""
    from exporter.collection.details import ProjectInfo

    api = FakeApi()
    api.projects.append({"projectId": "p3"})  # only what the API must send
    runs = details(api)
    runs.refresh([])
    assert runs.view([]).projects == (
        ProjectInfo("p1", "one", "CREATED", 3),
        ProjectInfo("p2", "two", "CHANGING", None),
        ProjectInfo("p3", "", "", None),
    )
    api.fail["projects", ""] = ConnectionFailedError("projects page 1: refused")
    with caplog.at_level(logging.WARNING):
        runs.refresh([])
    said = [r.getMessage() for r in caplog.records if "project list" in r.getMessage()]
    assert said == ["details: the project list could not be read: projects page 1: refused"]


def test_a_run_read_before_and_gone_now_leaves_the_view() -> None:
    """Bug caught: a run whose detail answers 404 after it was read kept in the view with its
    old GPU server and node counts (the entries of another key dropped instead)."""
    api, clock = FakeApi(), Clock()
    runs = details(api, clock)
    runs.refresh(keys("1", "2"))
    assert set(runs.view(keys("1", "2")).info) == {("p1", "1"), ("p1", "2")}
    api.fail["run", "1"] = HTTPStatusError("run 1: HTTP 404", status=404)
    clock.now += 3600  # every detail due again
    runs.refresh(keys("1", "2"))
    view = runs.view(keys("1", "2"))
    assert set(view.info) == {("p1", "2")}
    assert ("p1", "1") not in view.nodes


def test_each_retried_read_is_said_by_what_it_reads(caplog: pytest.LogCaptureFixture) -> None:
    """Bugs caught: a detail read's retry said as another read's (the debug line that tells
    which request is slow names the project list, a run or its nodes)."""

    class OnceEach(FakeApi):
        def _call(self, endpoint: str, name: str) -> None:
            first = (endpoint, name) not in self.calls
            super()._call(endpoint, name)
            if first:
                raise HTTPStatusError("HTTP 503", status=503, retryable=True)

    caplog.set_level(logging.DEBUG, logger="exporter.nsml.retry")
    details(OnceEach(), retries=1).refresh(keys("1"))
    said = [r.getMessage().split(" in ")[0] for r in caplog.records]
    assert said == ["retrying projects", "retrying run 1", "retrying nodes of run 1"]


def test_a_run_gone_is_said_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.fail["run", "1"] = HTTPStatusError("run 1: HTTP 404", status=404)
    caplog.set_level(logging.DEBUG, logger="exporter.collection.details")
    details(api).refresh(keys("1"))
    assert "details: run 1 of project p1 is gone (404)" in [r.getMessage() for r in caplog.records]


def test_a_read_that_answers_ends_its_failure_streak(caplog: pytest.LogCaptureFixture) -> None:
    """Bugs caught: a success that leaves the failure count (one later failure is then taken
    for a persistent one, named and backed off long), or leaves the read marked as named (a
    second streak never said)."""
    api, clock = FakeApi(), Clock()
    runs = details(api, clock)
    named_after: list[int] = []
    for streak in range(2):
        api.fail["run", "1"] = HTTPStatusError("HTTP 500", status=500)
        for failure in range(1, 4):
            caplog.clear()
            runs.refresh(keys("1"))
            if any("keep failing" in r.getMessage() for r in caplog.records):
                named_after.append(failure)
            clock.now += 3600  # past every back-off
        del api.fail["run", "1"]
        runs.refresh(keys("1"))  # answers
        clock.now += 3600
        assert runs.view(keys("1")).info, f"streak {streak}: the detail was read"
    assert named_after == [3, 3]


def test_the_details_threads_are_named_daemons() -> None:
    """Bugs caught: the refresh's threads unnamed (a py-spy dump says "Thread-9"), or not
    daemons (the process would wait for a refresh to end)."""
    release = threading.Event()

    class Slow(FakeApi):
        def get_projects(self, page: int, deadline: float) -> dict[str, Any]:
            release.wait(10)
            return super().get_projects(page, deadline)

        def get_run(self, project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
            release.wait(10)
            return super().get_run(project_id, run_name, deadline)

    runs = details(Slow())
    try:
        runs.refresh_in_background(keys("1"))
        names = {t.name: t.daemon for t in threading.enumerate()}
        assert names.get("nsml-details") is True
        release.set()
        deadline = time.monotonic() + 10
        while not any(n.startswith("nsml-details_") for n in names) and time.monotonic() < deadline:
            names = {t.name: t.daemon for t in threading.enumerate()}
            time.sleep(0.01)
        assert any(n.startswith("nsml-details_") for n in names)  # the pool's workers
    finally:
        release.set()
        runs.close()


def test_no_more_than_concurrency_reads_run_at_once() -> None:
    """Bug caught: the details' pool sized by Python's default (up to 32 threads), not by
    CONCURRENCY: a refresh would open that many requests to the API at once."""
    in_flight = InFlight()

    class Counted(FakeApi):
        def get_run(self, project_id: str, run_name: str, deadline: float) -> dict[str, Any]:
            with in_flight:
                time.sleep(0.02)
            return super().get_run(project_id, run_name, deadline)

    runs = details(Counted(), concurrency=2)
    try:
        runs.refresh(keys(*(str(n) for n in range(12))))
    finally:
        runs.close()
    assert in_flight.most <= 2


def test_a_run_gone_is_not_asked_again_across_scrapes() -> None:
    """Bug caught: the view dropping what it knows of gone runs that still have series (the
    wrong ones): every scrape's refresh would ask the 404 again."""
    api = FakeApi()
    api.fail["run", "1"] = HTTPStatusError("run 1: HTTP 404", status=404)
    runs = details(api)
    for _ in range(3):
        runs.refresh(keys("1"), {("p1", "1"): "v1"})
        runs.view(keys("1"))  # a scrape, between refreshes
    assert api.of("run") == ["1"]


def test_a_gone_run_or_one_in_back_off_holds_up_no_other_read() -> None:
    """Bugs caught: planning stopped at a run gone (404) or at a read in its back-off: the
    runs after it, or the same run's node list, never read."""
    api, clock = FakeApi(), Clock()
    api.fail["run", "1"] = HTTPStatusError("run 1: HTTP 404", status=404)
    api.fail["run", "2"] = HTTPStatusError("run 2: HTTP 500", status=500)
    runs = details(api, clock, nodes_refresh=10, status_refresh=1000)
    runs.refresh(keys("1", "2"), {("p1", "1"): "v1"})
    clock.now += 15  # run 2's detail still in its back-off (30 s); its nodes are due again
    runs.refresh(keys("1", "2", "3"), {("p1", "1"): "v1"})
    assert api.of("nodes") == ["1", "2", "3", "2"]  # then: the new run first, then the due
    assert api.of("run") == ["1", "2", "3"]


def test_a_failed_detail_is_said_by_its_error(caplog: pytest.LogCaptureFixture) -> None:
    """Bug caught: an HTTP error of a detail said as "None" in the refresh's warning."""
    api = FakeApi()
    api.fail["run", "1"] = HTTPStatusError("run 1: HTTP 500", status=500)
    details(api).refresh(keys("1"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "details: 1 of 2 reads failed (the runs stay pending); first: run 1: HTTP 500"
    ]


def test_reads_that_keep_failing_are_named_ten_at_most(caplog: pytest.LogCaptureFixture) -> None:
    """Bug caught: the line naming failing reads made as long as the failures (one line per
    refresh that grows with an outage)."""
    api, clock = FakeApi(), Clock()
    names = [f"{n:02}" for n in range(11)]
    for name in names:
        api.fail["run", name] = HTTPStatusError("HTTP 500", status=500)
    runs = details(api, clock, detail_requests=100)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            runs.refresh(keys(*names))
            clock.now += 3600
    (line,) = [r.getMessage() for r in caplog.records if "keep failing" in r.getMessage()]
    assert line.startswith("details: 11 read(s) keep failing, asked again only after a back-off")
    assert line.count("detail of run") == 10
    assert line.endswith("detail of run 09 of project p1")
