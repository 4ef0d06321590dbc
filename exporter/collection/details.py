"""GPU and capacity: the projects, and for each run with per-run series its detail (the GPU server)
and its nodes.

Read after a collection, off the scrape's path, and kept across collections: a run's detail again
after `STATUS_REFRESH` (its status goes to the store of runs, so a run that finished shows without
waiting for a full read of the list), its node list again after `NODES_REFRESH`. One refresh
spends at most `DETAIL_REQUESTS` detail and node-page requests: first the reads never made, oldest
runs first, then the stalest. Requests take their turn in the reader's pace (`READ_RATE`). Each
collection serves a view taken as it ends, so what a refresh reads shows from the next collection
on.

A failure here never fails the collection: the project families are absent until the list is
read again, a run stays pending, the request is counted by endpoint and the refresh logs one
warning. A run whose reads keep failing is asked again only after a back-off (30 s, doubling to
10 minutes), so it cannot spend the budget of younger runs; the runs that fail three times in a
row are named once in the log. A 404 means the run is gone: it leaves the store of runs, and is not
asked again until the run list shows it changed (its status or updateTime). Only `engFullName`,
`gpuSvrCode`, `imageType` and `status` of a detail are decoded; its body is never logged.

Threads: a refresh runs on a thread of its own and reads with a pool; `view()` is called by
collections. Every field below `_lock` is read and written under it only; reads of the API are
made outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from ..errors import CollectionError, HTTPStatusError
from ..nsml.api import NsmlApi
from ..nsml.models import Node, Project
from ..nsml.paging import RunKey, read_list
from ..nsml.retry import exponential, with_retries
from ..settings import Settings


class RunsFollowed(Protocol):
    """What details tell the store of runs (`store.RunStore`)."""

    def set_status(self, key: RunKey, status: str, at: float) -> bool: ...

    def remove(self, key: RunKey) -> bool: ...


log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds before a run whose read failed is asked again: doubled each time, up to the cap.
RETRY_BASE, RETRY_CAP = 30.0, 600.0
#: Failures in a row after which a run is named in the log (once).
FAILING_AFTER = 3


@dataclass(frozen=True, slots=True)
class RunInfo:
    gpu_server: str
    gpu_server_code: str
    image_type: str


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    project_id: str
    name: str
    status: str
    nodes: int | None


@dataclass(frozen=True, slots=True)
class DetailsView:
    """What is known, as one collection ends, of the runs that have series."""

    #: None when the project list has not been read, or its last reading failed.
    projects: tuple[ProjectInfo, ...] | None = None
    info: dict[RunKey, RunInfo] = field(default_factory=dict)
    #: run -> node state -> nodes in it
    nodes: dict[RunKey, dict[str, int]] = field(default_factory=dict)
    #: runs with series whose detail or node list is not read yet
    pending: int = 0


class _Budget:
    """Requests left to one refresh, taken by its worker threads."""

    def __init__(self, requests: int) -> None:
        self._left = requests
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


class _Spent(Exception):
    """The refresh's budget ran out in the middle of a node list."""


class RunDetails:
    """Projects, run details and node lists, kept between collections. Thread-safe."""

    def __init__(
        self,
        api: NsmlApi,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._clock = clock
        self._wall = wall_clock
        self._budget = settings.detail_requests
        self._refresh_after = settings.nodes_refresh
        self._status_after = settings.status_refresh
        self._store: RunsFollowed | None = None
        self._wait_turn: Callable[[], None] = lambda: None
        self._deadline = settings.collect_timeout
        self._first_page = settings.first_page
        self._retries = settings.retries
        self._wanted = frozenset(settings.projects)
        self._lock = threading.Lock()
        self._info: dict[RunKey, tuple[float, RunInfo]] = {}  # when read, what
        self._nodes: dict[RunKey, tuple[float, dict[str, int]]] = {}
        self._projects: tuple[ProjectInfo, ...] | None = None
        #: (read, run) -> failures in a row, and when it may be asked again
        self._failing: dict[tuple[str, RunKey], tuple[int, float]] = {}
        self._gone: dict[RunKey, object] = {}  # runs answered 404: their version then
        self._named: set[tuple[str, RunKey]] = set()  # reads named in the log as failing
        self._version_of: Mapping[RunKey, object] = {}  # the refresh's versions of its runs
        self._running: threading.Thread | None = None
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="nsml-details")

    def follow(self, store: RunsFollowed, wait_turn: Callable[[], None]) -> None:
        """Give each detail's status to `store` (a 404 removes the run), and call `wait_turn`
        before each request (the reader's pace)."""
        self._store, self._wait_turn = store, wait_turn

    def close(self) -> None:
        """Stop: a refresh under way ends without finishing its reads."""
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def view(self, series: Iterable[RunKey]) -> DetailsView:
        """What is known of `series` (the runs with series now); runs without are forgotten."""
        keys = list(series)
        wanted = set(keys)
        with self._lock:
            for gone in [key for key in self._info if key not in wanted]:
                del self._info[gone]
            for gone in [key for key in self._nodes if key not in wanted]:
                del self._nodes[gone]
            for gone in [key for key in self._gone if key not in wanted]:
                del self._gone[gone]
            for read in [read for read in self._failing if read[1] not in wanted]:
                del self._failing[read]
            self._named = {read for read in self._named if read[1] in wanted}
            info = {key: self._info[key][1] for key in keys if key in self._info}
            nodes = {key: self._nodes[key][1] for key in keys if key in self._nodes}
            projects = self._projects
        pending = sum(1 for key in keys if key not in info or key not in nodes)
        return DetailsView(projects, info, nodes, pending)

    def plan(
        self, series: Iterable[RunKey], versions: Mapping[RunKey, object] | None = None
    ) -> list[tuple[str, RunKey]]:
        """The reads `series` needs: first those never made, oldest run first (a detail, a node
        list), then the stalest again (a detail older than `STATUS_REFRESH`, a node list older
        than `NODES_REFRESH`); none for a run in its back-off, or gone (404) at the version
        (`versions`: status and updateTime) the run list still gives it."""
        now = self._clock()
        first: list[tuple[str, RunKey]] = []
        again: list[tuple[float, int, tuple[str, RunKey]]] = []
        versions = versions or {}
        with self._lock:
            for order, key in enumerate(series):
                if key in self._gone:
                    if self._gone[key] == versions.get(key):
                        continue
                    del self._gone[key]
                for kind, done, every in (
                    ("run", self._info.get(key), self._status_after),
                    ("nodes", self._nodes.get(key), self._refresh_after),
                ):
                    read = (kind, key)
                    failing = self._failing.get(read)
                    if failing is not None and now < failing[1]:
                        continue  # in its back-off
                    if done is None:
                        first.append(read)
                    elif now - done[0] >= every:
                        again.append((done[0], order, read))
        return first + [read for _, _, read in sorted(again)]

    def refresh_in_background(
        self, series: Iterable[RunKey], versions: Mapping[RunKey, object] | None = None
    ) -> None:
        """`refresh` on a thread of its own, unless one is still going."""
        with self._lock:
            if self._closed.is_set() or (self._running is not None and self._running.is_alive()):
                return
            self._running = threading.Thread(
                target=self.refresh,
                args=(list(series), versions),
                name="nsml-details",
                daemon=True,
            )
            self._running.start()

    def refresh(
        self, series: Iterable[RunKey], versions: Mapping[RunKey, object] | None = None
    ) -> None:
        """Read the project list, then what `plan` asks for within the budget. Never raises."""
        self._version_of = versions or {}
        self._read_projects()
        plan = self.plan(series, versions)
        budget = _Budget(self._budget)
        try:
            failed = [
                error
                for error in self._pool.map(lambda item: self._read(item, budget), plan)
                if error
            ]
        except (CancelledError, RuntimeError):  # closed under it: the exporter is stopping
            if self._closed.is_set():
                return
            raise
        if failed:
            log.warning(
                "details: %d of %d reads failed (the runs stay pending); first: %s",
                len(failed),
                len(plan),
                failed[0],
            )
        with self._lock:
            keep = {read for read, (n, _) in self._failing.items() if n >= FAILING_AFTER}
            new = sorted(keep - self._named)
            self._named.update(new)
        if new:
            log.warning(
                "details: %d read(s) keep failing, asked again only after a back-off: %s",
                len(new),
                ", ".join(
                    f"{'detail' if kind == 'run' else 'nodes'} of run {name} of project {project}"
                    for kind, (project, name) in new[:10]
                ),
            )

    def _read_projects(self) -> None:
        def page(number: int) -> tuple[list[Project], int]:
            got = self._retried(partial(self._api.get_projects, number), "projects")
            return got["projects"], got["totalCount"]

        try:
            listed = read_list(page, first_page=self._first_page, page_size=self._api.page_size)
        except CollectionError as error:
            log.warning("details: the project list could not be read: %s", error)
            with self._lock:
                self._projects = None
            return
        projects: dict[str, ProjectInfo] = {}
        for project in listed:
            name = project.get("projectName", "")
            if self._wanted and not {project["projectId"], name} & self._wanted:
                continue
            projects.setdefault(
                project["projectId"],
                ProjectInfo(
                    project["projectId"], name, project.get("status", ""), project.get("nodeCount")
                ),
            )
        with self._lock:
            self._projects = tuple(projects.values())

    def _read(self, item: tuple[str, RunKey], budget: _Budget) -> str | None:
        """One planned read; the failure's message, or None."""
        kind, key = item
        try:
            if kind == "run":
                if not budget.take():
                    return None
                self._read_detail(key)
            else:
                self._read_nodes(key, budget)
        except _Spent:
            return None
        except HTTPStatusError as error:
            if error.status != 404:
                return self._failed(item, error)
            log.debug("details: run %s of project %s is gone (404)", key[1], key[0])
            with self._lock:
                self._info.pop(key, None)
                self._nodes.pop(key, None)
                self._failing.pop(item, None)
                self._gone[key] = self._version_of.get(key)
            if self._store is not None:
                self._store.remove(key)
            return None
        except CollectionError as error:
            return self._failed(item, error)
        with self._lock:
            self._failing.pop(item, None)
            self._named.discard(item)
        return None

    def _failed(self, item: tuple[str, RunKey], error: CollectionError) -> str:
        """A failed read: its back-off grows. The error's message."""
        with self._lock:
            count = self._failing.get(item, (0, 0.0))[0] + 1
            delay = exponential(count - 1, RETRY_BASE, RETRY_CAP)
            self._failing[item] = (count, self._clock() + delay)
        return str(error)

    def _retried(self, call: Callable[[float], T], what: str) -> T:
        """`call(deadline)` once its turn comes (the reader's pace), retried like a page of
        the run list (429, 5xx, timeouts, broken connections: `RETRIES` times), within
        `COLLECT_TIMEOUT` from its turn: waiting for turns never eats a request's time."""
        self._wait_turn()
        deadline = time.monotonic() + self._deadline
        return with_retries(
            partial(call, deadline), retries=self._retries, deadline=deadline, what=what
        )

    def _read_detail(self, key: RunKey) -> None:
        detail = self._retried(partial(self._api.get_run, key[0], key[1]), f"run {key[1]}")
        code = detail.get("gpuSvrCode")
        info = RunInfo(
            detail.get("engFullName", ""),
            "" if code is None else str(code),
            detail.get("imageType", ""),
        )
        with self._lock:
            self._info[key] = (self._clock(), info)
        status = detail.get("status")
        if status and self._store is not None:
            self._store.set_status(key, status, self._wall())

    def _read_nodes(self, key: RunKey, budget: _Budget) -> None:
        def page(number: int) -> tuple[list[Node], int]:
            if not budget.take():
                raise _Spent
            got = self._retried(
                partial(self._api.get_nodes, key[0], key[1], number), f"nodes of run {key[1]}"
            )
            return got["nodes"], got["totalCount"]

        nodes = read_list(page, first_page=self._first_page, page_size=self._api.page_size)
        states = dict(Counter(node.get("state", "") for node in nodes))
        with self._lock:
            self._nodes[key] = (self._clock(), states)
