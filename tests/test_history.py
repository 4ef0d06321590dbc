"""Long histories: reading on scrape or in the background, the view, head reads, churn.

The churn tests read the simulator over real HTTP while a hook changes its list between pages,
in both orders, and check the counts against the simulator's own list once the churn stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.collection import history as history_module
from exporter.collection.collector import NsmlCollector
from exporter.collection.snapshot import Snapshot
from exporter.errors import HTTPStatusError, RequestTimeoutError
from exporter.nsml.client import NsmlClient, Pace
from exporter.nsml.paging import Created, RunList, Take
from exporter.selfmetrics import ExporterMetrics
from tests.conftest import ACCESS, SECRET, api_run, make_settings, sim_run
from tests.fake_api import FaultyServer, FaultySimulator
from tests.fake_source import FakeSource, Runs
from tests.test_collector import run_list

IN_PROGRESS, COMPLETED = "RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED"
Key = tuple[str, str, str]  # project_id, run_type, status


def frozen_runs(count: int, start: float) -> list[Any]:
    """`count` runs one second apart from `start`, over three projects, frozen in their state."""
    return [
        sim_run(
            f"p{n % 3}",
            str(n),
            IN_PROGRESS if n % 4 == 0 else COMPLETED,
            created=start + n,
            run_type="TRAIN" if n % 2 else "NOTEBOOK",
        )
        for n in range(count)
    ]


def truth(sim: FaultySimulator) -> Counter[Key]:
    now = sim.now()
    return Counter((r.project_id, r.run_type, r.state(now)[0]) for r in sim.visible(now))


def served(snap: Snapshot) -> Counter[Key]:
    assert snap.ok, snap.error
    return Counter(
        {(pid, run_type, status): n for (pid, _, status, run_type), n in snap.counts.items() if n}
    )


class Stack:
    """A collector reading the simulator over HTTP, in the background unless told otherwise."""

    def __init__(self, server: FaultyServer, **settings: Any) -> None:
        values: dict[str, Any] = {
            "base_url": server.base_url,
            "page_size": 10,
            "concurrency": 2,
            "read_rate": 1000,
            "collection_mode": "background",
            "details": False,
        }
        values.update(settings)
        self.settings = make_settings(**values)
        self.client = NsmlClient(self.settings)
        self.metrics = ExporterMetrics()
        self.collector = NsmlCollector(self.settings, self.client, self.metrics)

    def scrape(self) -> Snapshot:
        return self.collector.shared.get()

    def view_after(self, moment: float, timeout: float = 30) -> Snapshot:
        """A scrape served from a full read that began after `moment` (wall clock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.scrape()
            if snap.ok and snap.view_started > moment:
                return snap
            time.sleep(0.05)
        raise AssertionError("no full read began after the churn within the timeout")

    def close(self) -> None:
        self.collector.history.close()
        self.client.close()


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    server = FaultyServer(FaultySimulator(ACCESS, SECRET)).start()
    yield server
    server.stop()


def churn_during_first_read(sim: FaultySimulator, now: float) -> threading.Event:
    """Between the pages of the first full read: runs created (at the head, or anywhere when
    the list is in an arbitrary order), deleted (one already read, one not yet), and one deep
    in the list finished. The event is set when the churn is over."""
    over = threading.Event()
    steps: dict[int, Callable[[], None]] = {
        2: lambda: sim.listing.add(
            [sim_run("p0", f"new-{n}", IN_PROGRESS, created=now - 5 + n) for n in range(5)]
        ),
        3: lambda: sim.listing.delete([("p1", "58"), ("p0", "3")]),
        4: lambda: sim.listing.replace(sim_run("p0", "0", "RUN_STATE_FAILED", created=now - 100)),
        5: over.set,
    }
    served_pages: list[int] = []
    lock = threading.Lock()

    def on_page(page: int) -> None:
        with lock:
            served_pages.append(page)
            step = steps.pop(len(served_pages), None)
        if step is not None:
            step()

    sim.on_page = on_page
    return over


@pytest.mark.parametrize("order", ["newest", "arbitrary"])
def test_counts_are_exact_one_full_read_after_the_churn_stops(
    server: FaultyServer, order: str
) -> None:
    """Bugs caught: a deleted run kept (a view merged into the last one instead of replacing
    it), a finished run still counted in progress, a new run lost, in either order."""
    sim = server.sim
    now = time.time()
    sim.listing.order = order
    sim.set_runs(frozen_runs(60, now - 100))
    over = churn_during_first_read(sim, now)
    stack = Stack(server)
    try:
        stack.scrape()  # starts the background reading
        assert over.wait(20)
        after = time.time()
        snap = stack.view_after(after)
        assert served(snap) == truth(sim)
        assert sum(truth(sim).values()) == 63  # 60 + 5 created - 2 deleted
        assert snap.newest_first is (order == "newest")
    finally:
        stack.close()


def test_a_run_pushed_onto_the_next_page_is_counted_once(server: FaultyServer) -> None:
    """Bug caught: runs not deduplicated across pages. Five runs created at the head after
    page 1 was read push five runs of page 1 onto page 2: the read must not count them twice."""
    sim = server.sim
    now = time.time()
    sim.set_runs(frozen_runs(40, now - 100))
    pushed = threading.Event()

    def on_page(page: int) -> None:
        if page == 2 and not pushed.is_set():
            pushed.set()
            sim.listing.add(
                [sim_run("p9", f"new-{n}", IN_PROGRESS, created=now - 5 + n) for n in range(5)]
            )

    sim.on_page = on_page
    stack = Stack(server, collection_mode="scrape")
    try:
        snap = stack.scrape()
        assert pushed.is_set()
        counted = sum(served(snap).values())
        # Every run once: the 40, and the 5 new ones only if the head was read again.
        assert 40 <= counted <= 45
        assert set(served(snap)) <= set(truth(sim))
        assert all(served(snap)[key] <= truth(sim)[key] for key in served(snap))
    finally:
        stack.close()


def test_new_runs_show_at_the_next_scrape_from_the_head_alone(server: FaultyServer) -> None:
    """Bug caught: the head not read on scrape (new runs wait for the next full read), or read
    without stopping at the view's newest run (a full read on every scrape)."""
    sim = server.sim
    now = time.time()
    sim.set_runs(frozen_runs(30, now - 200))
    stack = Stack(server, read_rate=0.5, concurrency=1)  # a full read takes seconds
    try:
        first = stack.view_after(0)
        view = stack.collector.history.view
        sim.listing.add(
            [sim_run("p1", f"new-{n}", IN_PROGRESS, created=now - 3 + n) for n in range(3)]
        )
        before = sim.requests["runs"]
        snap = stack.scrape()
        assert stack.collector.history.view is view  # no full read finished meanwhile
        assert served(snap) == truth(sim)
        assert sum(served(snap).values()) == sum(served(first).values()) + 3
        # One head page (and maybe one page of the paced background read), never a full read.
        assert sim.requests["runs"] - before <= 2
        assert snap.total_count == 33
    finally:
        stack.close()


def test_an_arbitrary_order_is_found_and_said_once(
    server: FaultyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug caught: the order assumed rather than checked (head reads trusted on a list that is
    not newest first)."""
    sim = server.sim
    sim.listing.order = "arbitrary"
    sim.set_runs(frozen_runs(50, time.time() - 100))
    stack = Stack(server)
    try:
        with caplog.at_level(logging.INFO):
            stack.view_after(0)
            snap = stack.view_after(time.time())
        assert snap.newest_first is False
        assert samples(stack.collector, snap)[("nsml_run_list_newest_first", "")] == 0
        said = [r for r in caplog.records if "not newest first" in r.getMessage()]
        assert len(said) == 1
    finally:
        stack.close()


def test_a_gateway_that_caps_pages_is_followed(server: FaultyServer) -> None:
    """Bug caught: paging by the asked size (pages 2 and 3 of 1000 would skip 900 runs)."""
    sim = server.sim
    sim.max_page_size = 100
    sim.set_runs(frozen_runs(250, time.time() - 300))
    stack = Stack(server, page_size=1000, collection_mode="scrape")
    try:
        snap = stack.scrape()
        assert served(snap) == truth(sim)
        assert sim.requests["runs"] == 3
    finally:
        stack.close()


def test_a_gateway_that_refuses_large_pages_is_asked_for_100(
    server: FaultyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug caught: a 400 for pageSize=1000 failing every collection instead of falling back."""
    sim = server.sim
    sim.max_page_size, sim.refuse_large_pages = 100, True
    sim.set_runs(frozen_runs(250, time.time() - 300))
    stack = Stack(server, page_size=1000, collection_mode="scrape")
    try:
        snap = stack.scrape()
        assert served(snap) == truth(sim)
        assert (sim.requests["all"], sim.requests["runs"]) == (4, 3)  # one refused, 3 of 100
        assert stack.client.api.page_size == 100
        assert len([r for r in caplog.records if "refused pageSize=1000" in r.getMessage()]) == 1
        stack.scrape()
        assert sim.requests["runs"] == 6  # the fallback is kept
    finally:
        stack.close()


# -- modes, with a source that is no HTTP -----------------------------------------------------


class SlowSource(FakeSource):
    """A source whose full read takes `seconds` (its first run taken at once, the rest after),
    with requests of `latency` each; a read that would pass its deadline times out at it."""

    def __init__(self, runs: Runs, seconds: float, latency: float) -> None:
        super().__init__(lambda deadline: self.runs)
        self.runs, self.seconds, self.latency = runs, seconds, latency
        self.error: Exception | None = None

    def read_runs(
        self,
        take: Take,
        created: Created,
        *,
        deadline: float | None,
        pace: Callable[[], None] = lambda: None,
    ) -> RunList:
        self.reads += 1
        if self.error is not None:
            raise self.error
        take(self.runs[0])
        if deadline is not None and time.monotonic() + self.seconds > deadline:
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise RequestTimeoutError("page 2: COLLECT_TIMEOUT reached while waiting for it")
        time.sleep(self.seconds)
        for run in self.runs[1:]:
            take(run)
        return RunList(len(self.runs), 1, len(self.runs), len(self.runs), self.newest_first)


def collector_on(source: FakeSource, **settings: Any) -> NsmlCollector:
    values: dict[str, Any] = {"collect_timeout": 0.3, "details": False}
    values.update(settings)
    metrics = ExporterMetrics()
    collector = NsmlCollector(make_settings(**values), source, metrics)
    REGISTRIES[id(collector)] = registry = CollectorRegistry()
    metrics.register(registry)
    return collector


REGISTRIES: dict[int, CollectorRegistry] = {}


def errors(collector: NsmlCollector, reason: str) -> float:
    registry = REGISTRIES[id(collector)]
    return registry.get_sample_value("nsml_collection_errors_total", {"reason": reason}) or 0.0


def samples(collector: NsmlCollector, snap: Snapshot) -> dict[tuple[str, str], float]:
    """What a scrape of `snap` serves: (name, the one label value or "") -> value."""
    return {
        (s.name, next(iter(s.labels.values()), "")): s.value
        for family in collector.families(snap)
        for s in family.samples
    }


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_a_read_that_outgrows_the_scrape_goes_on_in_the_background(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bugs caught: a read over COLLECT_TIMEOUT thrown away (never a view), the switch logged
    on every scrape, warming not said."""
    # 1.2 s: over COLLECT_TIMEOUT (0.3 s) and the scrape's grace.
    source = SlowSource(run_list([api_run("p1", "1", IN_PROGRESS)]), seconds=1.2, latency=1.0)
    collector = collector_on(source)
    try:
        with caplog.at_level(logging.INFO):
            first = collector.shared.get()
            assert (first.ok, first.warming, first.mode) == (False, True, "background")
            warming = samples(collector, first)
            assert warming[("nsml_up", "")] == 0 and warming[("nsml_view_warming", "")] == 1
            assert ("nsml_view_age_seconds", "") not in warming  # no view yet
            wait_until(lambda: collector.history.view is not None)
            snaps = [collector.shared.get() for _ in range(3)]
        assert all(s.ok and not s.warming and s.mode == "background" for s in snaps)
        served = samples(collector, snaps[-1])
        assert served[("nsml_up", "")] == 1 and served[("nsml_view_warming", "")] == 0
        mode = {m: served[("nsml_collection_mode", m)] for m in ("scrape", "background")}
        assert mode == {"scrape": 0, "background": 1}
        age = served[("nsml_view_age_seconds", "")]
        assert age == snaps[-1].finished - snaps[-1].view_started and 0 < age < 10
        assert 1.2 <= served[("nsml_full_read_duration_seconds", "")] < 5
        assert served[("nsml_run_list_newest_first", "")] == 1
        switched = [r for r in caplog.records if "in the background" in r.getMessage()]
        assert len(switched) == 1
        assert source.reads >= 1
    finally:
        collector.history.close()


def test_background_reading_returns_to_the_scrape_once_a_read_would_fit() -> None:
    """Bug caught: the way back never taken (or taken while reads still would not fit)."""
    source = SlowSource(run_list([api_run("p1", "1")]), seconds=0.5, latency=1.0)
    collector = collector_on(source)
    try:
        collector.shared.get()
        wait_until(lambda: collector.history.view is not None)
        time.sleep(0.6)
        assert collector.history.mode == "background"  # 1 s a request: still too slow
        source.seconds, source.latency = 0.0, 0.01
        wait_until(lambda: bool(collector.shared.get()) and collector.history.mode == "scrape")
        snap = collector.shared.get()
        assert snap.ok and snap.mode == "scrape"
    finally:
        collector.history.close()


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_failing_background_read_is_up_0_at_the_next_scrape_and_counted_once(
    monkeypatch: pytest.MonkeyPatch, newest_first: bool
) -> None:
    """Bugs caught: the last view served with up 1 while the API fails (a head read that
    answers masking full reads that fail), the failure counted on every scrape, the view's age
    not kept while failing."""
    monkeypatch.setattr(history_module, "RETRY_FIRST", 0.2)
    source = SlowSource(run_list([api_run("p1", "1")]), seconds=0.05, latency=1.0)
    source.newest_first = newest_first
    collector = collector_on(source, collection_mode="background")
    try:
        collector.shared.get()
        wait_until(lambda: collector.history.view is not None)
        source.error = HTTPStatusError("page 1: HTTP 503", status=503)
        wait_until(lambda: errors(collector, "http") >= 1)
        snaps = [collector.shared.get() for _ in range(3)]
        assert [s.ok for s in snaps] == [False, False, False]
        assert snaps[0].view_started > 0 and snaps[-1].finished - snaps[-1].view_started > 0
        counted = errors(collector, "http")
        for _ in range(10):
            assert not collector.shared.get().ok
        # Counted when the background read failed, not again by each scrape that serves it.
        assert errors(collector, "http") - counted <= 1
        # Back, with a read that takes a while: up 1 (the last view) from its first page on.
        old = collector.history.view
        source.error, source.seconds = None, 2.0
        wait_until(lambda: collector.shared.get().ok)
        assert collector.history.view is old
    finally:
        collector.history.close()


def test_forced_scrape_mode_never_reads_in_the_background() -> None:
    """Bug caught: COLLECTION_MODE=scrape ignored (a read over COLLECT_TIMEOUT goes to the
    background instead of failing the scrape as `timeout`, as before)."""
    source = SlowSource(run_list([api_run("p1", "1"), api_run("p1", "2")]), 1.2, latency=1.0)
    collector = collector_on(source, collection_mode="scrape")
    try:
        snap = collector.shared.get()
        assert (snap.ok, snap.warming, snap.mode) == (False, False, "scrape")
        assert errors(collector, "timeout") == 1
        source.seconds = 0.0
        assert collector.shared.get().ok
        assert collector.history.mode == "scrape"
    finally:
        collector.history.close()


def test_pace_spends_at_most_rate_requests_a_second() -> None:
    """Bug caught: tokens not refilled by the time passed, or a burst larger than asked."""
    now = [0.0]
    pace = Pace(rate=10, burst=2, clock=lambda: now[0])
    waits = [pace._take() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2])
    now[0] = 1.0  # a second later: ten tokens earned, but the bucket holds two
    assert [pace._take() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])
    pace.charge(2)  # a head read of two pages: taken, not waited for
    assert pace._take() == pytest.approx(0.4)


def test_a_bug_in_the_background_read_is_counted_and_reading_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bug caught: an unexpected exception ending the reading thread for good (the view never
    read again), or passing uncounted."""
    monkeypatch.setattr(history_module, "RETRY_FIRST", 0.1)
    source = SlowSource(run_list([api_run("p1", "1")]), seconds=0.0, latency=1.0)
    source.newest_first = False
    source.error = ValueError("a bug")
    collector = collector_on(source, collection_mode="background")
    try:
        collector.shared.get()
        wait_until(lambda: errors(collector, "internal") >= 1)
        assert not collector.shared.get().ok
        source.error = None
        wait_until(lambda: collector.shared.get().ok)
    finally:
        collector.history.close()
