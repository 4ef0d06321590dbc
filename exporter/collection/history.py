"""The run list's whole history, read on scrape while that fits, else in the background.

While a full read fits `COLLECT_TIMEOUT` it is made on the scrape: exact at every scrape. One that
does not is not thrown away: it goes on in the background, the switch is logged once, and scrapes
are answered at once from the last complete view. There, full reads follow each other, paced to
`READ_RATE`; where the list is verified newest first, each scrape also reads its head down to the
view's newest run. Once a read would take under `SWITCH_BACK` of `COLLECT_TIMEOUT` (estimated, as
if unpaced), reading goes back to the scrape. `COLLECTION_MODE` forces either mode. A failed
background read is counted and logged once; scrapes get `nsml_up 0` until the API answers again.
See docs/long-histories.md.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Protocol

from ..errors import CollectionError
from ..nsml.client import Pace
from ..nsml.models import Run, to_timestamp
from ..nsml.paging import Created, RunKey, RunList, Take
from ..settings import Settings
from .snapshot import Rules, Tally

log = logging.getLogger(__name__)

SCRAPE, BACKGROUND = "scrape", "background"
MODES = (SCRAPE, BACKGROUND)
#: A read on scrape that took over this share of COLLECT_TIMEOUT moves reading to the background.
SWITCH_AT = 0.8
#: Background reading goes back to reading on scrape below this share (an estimate).
SWITCH_BACK = 0.4
#: How much longer than COLLECT_TIMEOUT a scrape waits for a read on scrape: a page that fails
#: at its deadline (COLLECT_TIMEOUT from the read's start) is then this scrape's failure.
GRACE = 0.5
#: Seconds between tries after a failed background read: doubled each time, up to the cap.
RETRY_FIRST, RETRY_CAP = 5.0, 60.0


class RunSource(Protocol):
    """What reading needs of the API (`nsml.client.NsmlClient`)."""

    @property
    def latency(self) -> float: ...

    def read_runs(
        self,
        take: Take,
        created: Created,
        *,
        deadline: float | None,
        pace: Callable[[], None] = ...,
    ) -> RunList: ...

    def read_head(
        self,
        since: float,
        known: Callable[[RunKey], bool],
        take: Take,
        created: Created,
        *,
        deadline: float,
    ) -> tuple[int, int]: ...


class ReadFailed(CollectionError):
    """The background read is failing: already counted and logged when it failed."""

    def __init__(self, cause: CollectionError) -> None:
        super().__init__(str(cause))
        self.reason = cause.reason


@dataclass(frozen=True, slots=True)
class View:
    """One complete full read."""

    tally: Tally
    run_list: RunList
    started: float  # Unix seconds
    seconds: float


@dataclass(frozen=True, slots=True)
class Collected:
    """What a scrape is served from: the view, with what the list's head added since."""

    tally: Tally | None  # None while the first full read is under way
    total_count: int
    view_started: float
    full_read_seconds: float
    mode: str
    newest_first: bool | None


class History:
    """Full reads of the run list and the view they leave. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        source: RunSource,
        rules: Rules,
        count_error: Callable[[CollectionError], None],
        wall_clock: Callable[[], float] = time.time,
        *,
        once: bool = False,
    ) -> None:
        self._source = source
        self._rules = rules
        self._count_error = count_error
        self._now = wall_clock
        self._timeout = settings.collect_timeout
        self._concurrency = settings.concurrency
        self._setting = settings.collection_mode
        self._once = once  # --once: one full read, however long, on the caller's thread
        self._mode = BACKGROUND if self._setting == BACKGROUND else SCRAPE
        self._pace = Pace(settings.read_rate, settings.concurrency)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._view: View | None = None
        self._failure: CollectionError | None = None
        self._newest_first: bool | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def view(self) -> View | None:  # the last complete full read
        return self._view

    @property
    def newest_first(self) -> bool | None:  # as the last full read found the list
        return self._newest_first

    def close(self) -> None:
        self._closed.set()

    def created(self, run: Run) -> float:
        return to_timestamp(run["createTime"], self._rules.zone)

    def collect(self) -> Collected:
        """The run list for one scrape. Raises `CollectionError`."""
        if self._setting == SCRAPE or self._once:
            deadline = None if self._once else time.monotonic() + self._timeout
            return self._serve(self._read(deadline=deadline, paced=False), head=False)
        if self._mode == SCRAPE:
            done = self._start()
            limit = f"COLLECT_TIMEOUT ({self._timeout:g}s)"
            if not done.wait(self._timeout + GRACE):
                self._switch(BACKGROUND, f"a full read took longer than {limit}")
                if self._view is None:
                    return Collected(None, 0, 0.0, 0.0, self._mode, None)
                return self._serve(self._view, head=False)  # no time left for the head
            elif self._failure is not None:
                raise ReadFailed(self._failure)
            elif (read := self._view) is not None:
                if read.seconds > SWITCH_AT * self._timeout:
                    self._switch(BACKGROUND, f"a full read took {read.seconds:.1f}s of {limit}")
                return self._serve(read, head=False)
        self._start()
        view = self._view
        if self._failure is not None:  # until the next full read's first page answers
            raise ReadFailed(self._failure)
        if view is None:
            return Collected(None, 0, 0.0, 0.0, self._mode, None)
        return self._serve(view, head=bool(self._newest_first))

    def _serve(self, view: View, *, head: bool) -> Collected:
        tally, total = view.tally, view.run_list.total_count
        if head:
            fresh = Tally(self._rules, self._now())
            edge = view.tally.edge
            pages, total = self._source.read_head(
                view.tally.newest_created,
                edge.__contains__,
                fresh.add,
                self.created,
                deadline=time.monotonic() + self._timeout,
            )
            self._pace.charge(pages)
            tally = tally.merged(fresh)
        return Collected(
            tally, total, view.started, view.seconds, self._mode, view.run_list.newest_first
        )

    # -- reading -----------------------------------------------------------------------------

    def _start(self) -> threading.Event:
        """The reading thread, started unless it runs; the event set when its read ends."""
        with self._lock:
            if self._thread is None and not self._closed.is_set():
                self._done = threading.Event()
                self._thread = threading.Thread(target=self._run, name="nsml-reader", daemon=True)
                self._thread.start()
            return self._done

    def _run(self) -> None:
        delay = RETRY_FIRST
        try:
            while not self._closed.is_set():
                try:
                    self._read(deadline=None, paced=self._mode == BACKGROUND)
                    delay = RETRY_FIRST
                except CollectionError as error:
                    self._failure = error
                    self._count_error(error)
                except (CancelledError, RuntimeError) as error:
                    if self._closed.is_set():  # the pool closed: the exporter stops
                        return
                    self._internal(error)
                except Exception as error:
                    self._internal(error)
                with self._lock:
                    self._done.set()
                    self._done = threading.Event()
                    if self._mode != BACKGROUND:
                        self._thread = None
                        return
                if self._failure is not None:
                    self._closed.wait(delay)
                    delay = min(RETRY_CAP, 2 * delay)
        finally:
            with self._lock:
                self._thread = None
                self._done.set()

    def _internal(self, error: Exception) -> None:
        """A bug: counted as `internal`, logged with its traceback; reading goes on."""
        log.error("background read failed (internal error)", exc_info=error)
        self._failure = CollectionError("internal error in the background read")
        self._count_error(self._failure)

    def _read(self, *, deadline: float | None, paced: bool) -> View:
        """One full read, installed as the view."""
        started, began = self._now(), time.monotonic()
        tally = Tally(self._rules, started)

        def take(run: Run) -> None:
            self._failure = None  # the API answers again
            tally.add(run)

        def pace() -> None:
            if paced or self._mode == BACKGROUND:
                self._pace.wait(self._closed)

        run_list = self._source.read_runs(take, self.created, deadline=deadline, pace=pace)
        view = View(tally, run_list, started, time.monotonic() - began)
        self._order(run_list.newest_first)
        with self._lock:
            self._view = view
            self._failure = None
        if self._setting == "auto" and self._mode == BACKGROUND:  # the way back
            rounds = 1 + math.ceil(max(0, run_list.pages - 1) / self._concurrency)
            estimate = self._source.latency * rounds
            if estimate < SWITCH_BACK * self._timeout:
                self._switch(SCRAPE, f"a full read would now take about {estimate:.1f}s")
        return view

    def _order(self, newest_first: bool) -> None:
        if newest_first == self._newest_first:
            return
        if newest_first:
            log.log(
                logging.INFO if self._newest_first is not None else logging.DEBUG,
                "the run list is newest first: in the background, new runs are read from its "
                "head on each scrape",
            )
        else:
            log.warning(
                "the run list is not newest first: runs created since the last full read show "
                "only after the next one"
            )
        self._newest_first = newest_first

    def _switch(self, mode: str, why: str) -> None:
        with self._lock:
            if self._mode == mode:
                return
            self._mode = mode
        if mode == BACKGROUND:
            log.warning(
                "reading the run list in the background: %s; scrapes are answered from the "
                "last complete view (nsml_view_age_seconds says how old)",
                why,
            )
        else:
            log.info("reading the run list on scrape again: %s", why)
