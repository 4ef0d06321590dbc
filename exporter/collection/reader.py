"""The one reader of the run list: it owns the store of runs and every read that keeps it current.

Reading starts when the exporter starts, not at the first scrape. A *full read* pages through the
whole list into the store and then removes the runs it did not see (a reconciliation: see
`store.py`). How full reads are made depends on the mode:

- **scrape**: while a full read fits `COLLECT_TIMEOUT`, each scrape asks for one and waits for it
  (concurrent scrapes share it): exact at every scrape.
- **background**: a history too long for one scrape is read by full reads one after another,
  paced to `READ_RATE` and at least `RECONCILE_INTERVAL` apart, and scrapes are answered at once
  from the store. Where the list is newest first, its head is read every `HEAD_INTERVAL`
  seconds down to the first page that ends with a run already known (by identity, so a run dated
  in the future hides nothing), so new runs show within seconds. Status changes of runs with
  per-run series come from their run details (`details.py`); deletions show at the next full read.

In `auto` mode the first page of a full read decides: when the whole read is estimated (latency
and CPU) past `SWITCH_AT` of `COLLECT_TIMEOUT`, the read goes on in the background and the scrape
is answered at once. Reading comes back to the scrape only when a full read would take under
`SWITCH_BACK` of it, and no sooner than `SWITCH_HOLD` after the last switch: one switch, not a
flapping pair.

A full read that fails is never thrown away: the next try resumes at the page that failed, and
the runs already read stay in the store. `nsml_up` is 0 from the failure until that page answers,
so a deep page that keeps failing makes it change once, and `nsml_last_success_timestamp_seconds`
moves only when a full read completes.

Threads: the reader runs a full-read thread and a head-read thread; scrapes call `collect()` from
theirs. What scrapes see is one frozen `ReadState`, replaced whole under `_lock` (read it with
`state`, no lock needed); the lock is held only to swap it or the request for a full read, never
while reading the API. `_progress` and `_switched_at` belong to the full-read thread (or, for
`--once`, the caller's). The store has its own lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field, replace
from math import inf
from pathlib import Path
from typing import Protocol

from ..errors import CollectionError, InconsistentPagingError, RequestTimeoutError
from ..nsml.client import Pace
from ..nsml.models import Run, to_timestamp
from ..nsml.paging import Progress, RunKey, RunList, Take
from ..nsml.retry import exponential
from ..settings import Settings
from . import statefile
from .store import RunStore

log = logging.getLogger(__name__)

SCRAPE, BACKGROUND = "scrape", "background"
MODES = (SCRAPE, BACKGROUND)
#: A full read estimated past this share of COLLECT_TIMEOUT goes to the background.
SWITCH_AT = 0.8
#: Background reading comes back to the scrape below this share (estimated) ...
SWITCH_BACK = 0.4
#: ... and no sooner than this many seconds after the last switch.
SWITCH_HOLD = 600.0
#: How much longer than COLLECT_TIMEOUT a scrape waits for the full read it asked for: a page
#: that fails at the read's deadline is then this scrape's failure.
GRACE = 0.5
#: Seconds before a failed full read is tried again: doubled each time, up to the cap.
RETRY_FIRST, RETRY_CAP = 5.0, 60.0
#: Seconds between two log lines on the first full read's progress.
PROGRESS_EVERY = 30.0
#: Seconds between two reads of the list's head (background, newest first).
HEAD_INTERVAL = 10.0
#: Most runs a background full read did not see that are asked for by their detail before the
#: sweep (404: deleted; else kept, as offset paging skipped it). More than that is a mass
#: deletion: swept unasked.
VERIFY_AT_MOST = 100


class RunSource(Protocol):
    """What reading needs of the API (`nsml.client.NsmlClient`)."""

    @property
    def latency(self) -> float: ...

    def read_runs(
        self,
        take: Take,
        created: Callable[[Run], float],
        *,
        deadline: Callable[[], float | None],
        pace: Callable[[], None] = ...,
        progress: Progress | None = ...,
    ) -> RunList: ...

    def read_head(
        self,
        known: Callable[[RunKey], bool],
        take: Take,
        *,
        deadline: float,
        max_pages: int,
        min_pages: int = ...,
        pace: Callable[[], None] = ...,
    ) -> tuple[int, int]: ...

    def run_exists(self, project_id: str, run_name: str, deadline: float) -> bool: ...


class ReadFailed(CollectionError):
    """The reading is failing: already counted and logged by the reader."""

    def __init__(self, cause: CollectionError) -> None:
        super().__init__(str(cause))
        self.reason = cause.reason


@dataclass(frozen=True, slots=True)
class ReadState:
    """What the reader knows of its reading, as a scrape is served it."""

    mode: str = SCRAPE
    #: The store holds a complete read of the list (a full read, or a saved store).
    complete: bool = False
    #: The reading is failing: set by a failed full read, cleared when a page answers again.
    failure: CollectionError | None = None
    #: End of the last complete full read (Unix seconds), when it began, and how long it took.
    last_success: float = 0.0
    view_started: float = 0.0
    full_read_seconds: float = 0.0
    #: totalCount as last read (a full read's last page, or the head's first).
    total_count: int = 0
    #: Whether the last full read found the list newest first (None before the first).
    newest_first: bool | None = None
    #: Share of the full read under way that has been read (0 between reads).
    progress: float = 0.0
    #: Pages of the last complete full read.
    pages: int = 0


@dataclass(eq=False)
class Job:
    """A full read that scrapes wait for. `answered` is set when it ends, or when it moves to
    the background (the scrape is then answered from the store)."""

    deadline: float
    answered: threading.Event = field(default_factory=threading.Event)
    error: CollectionError | None = None


class Reader:
    """Owns the store of runs and every read of the run list. Thread-safe (see the module)."""

    def __init__(
        self,
        settings: Settings,
        source: RunSource,
        store: RunStore,
        count_error: Callable[[CollectionError], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        cpu_clock: Callable[[], float] = time.process_time,
        once: bool = False,
    ) -> None:
        self.store = store
        self._source = source
        self._count_error = count_error
        self._clock, self._wall, self._cpu = clock, wall_clock, cpu_clock
        self._zone = store.rules.zone
        self._timeout = settings.collect_timeout
        self._concurrency = settings.concurrency
        self._setting = settings.collection_mode
        self._interval = settings.reconcile_interval
        self._state_file = settings.state_file
        self._once = once  # --once: one full read, however long, on the caller's thread
        #: Every paced request (background pages, heads, details) takes a token here.
        self.pace = Pace(settings.read_rate, settings.concurrency, clock)
        self._lock = threading.Lock()
        self._state = ReadState(mode=BACKGROUND if self._setting == BACKGROUND else SCRAPE)
        self._job: Job | None = None  # the full read scrapes wait for, asked or under way
        self._wanted = threading.Event()  # a scrape asked for a full read
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._progress = Progress()
        self._began = (0.0, 0.0, 0.0)  # the full read under way: wall, monotonic, CPU clocks
        self._switched_at = -inf
        self._next_read = 0.0  # background: when the next full read may begin (monotonic)
        self._head_failing = False
        self._head_pages = 1  # the next head read reads at least this many pages

    @property
    def state(self) -> ReadState:
        return self._state

    def wait_turn(self) -> None:
        """Before a request made for the reader (details too): its turn in `READ_RATE` while
        reading is in the background; none on scrape or for `--once`."""
        if self._state.mode == BACKGROUND and not self._once:
            self.pace.wait(self._closed)

    def _update(self, **changes: object) -> ReadState:
        with self._lock:
            self._state = replace(self._state, **changes)  # type: ignore[arg-type]
            return self._state

    def created(self, run: Run) -> float:
        return to_timestamp(run["createTime"], self._zone)

    # -- the scrape's side ---------------------------------------------------------------------

    def start(self) -> None:
        """Load the saved store, if any, and start reading now: in scrape mode a first full
        read tells at once whether the history fits a scrape."""
        if self._run() and self._state.mode == SCRAPE:
            self._ask()

    def _run(self) -> bool:
        """Start the reader's threads, once; True for the call that started them."""
        with self._lock:
            if self._once or self._threads or self._closed.is_set():
                return False
            self._threads.append(threading.current_thread())  # claimed: started below
        self._load()
        threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in ((self._full_reads, "nsml-reader"), (self._heads, "nsml-head"))
        ]
        self._threads[:] = threads
        for thread in threads:
            thread.start()
        return True

    def close(self) -> None:
        """Stop reading; save the store if a file is set and it holds a complete read."""
        self._closed.set()
        self._wanted.set()
        if self._state_file is not None and self._state.complete and not self._once:
            self._save()

    def collect(self) -> ReadState:
        """The state one scrape is served from (the runs are in the store). Raises
        `ReadFailed`: a failure the reader counted and logged already."""
        if self._once:
            self._job = Job(deadline=inf)
            try:
                self._read(self._job)
            except CollectionError as error:
                self._failed(error)
                raise ReadFailed(error) from None
            return self._state
        self._run()  # in case the exporter did not start it (a collector registered by hand)
        if self._state.mode == SCRAPE:
            job = self._ask()
            if not job.answered.wait(max(0.0, job.deadline - self._clock()) + GRACE):
                raise ReadFailed(
                    RequestTimeoutError(f"the full read took longer than {self._limit()}")
                )
            if job.error is not None:
                raise ReadFailed(job.error)
        state = self._state
        if state.failure is not None:
            raise ReadFailed(state.failure)
        return state

    def _ask(self) -> Job:
        """The full read a scrape waits for: the one under way, or a new one."""
        with self._lock:
            if self._job is None:
                self._job = Job(deadline=self._clock() + self._timeout)
                self._wanted.set()
            return self._job

    def _limit(self) -> str:
        return f"COLLECT_TIMEOUT ({self._timeout:g}s)"

    # -- full reads ----------------------------------------------------------------------------

    def _full_reads(self) -> None:
        failures = 0  # background reads failed in a row
        while not self._closed.is_set():
            if not self._due():
                continue
            with self._lock:
                job = self._job = self._job or Job(deadline=self._clock() + self._timeout)
            try:
                self._read(job)
                failures = 0
            except CollectionError as error:
                job.error = error
                self._failed(error)
            except (CancelledError, RuntimeError) as error:
                if self._closed.is_set():  # the pool closed: the exporter stops
                    return
                job.error = self._internal(error)
            except Exception as error:
                job.error = self._internal(error)
            finally:
                with self._lock:
                    self._job = None
                job.answered.set()
            if job.error is not None and self._state.mode == BACKGROUND:
                self._closed.wait(exponential(failures, RETRY_FIRST, RETRY_CAP))
                failures += 1

    def _due(self) -> bool:
        """Wait until a full read is due: asked by a scrape (scrape mode), or its time has come
        (background). False when the wait ended for another reason."""
        if self._state.mode == SCRAPE:
            self._wanted.wait(1.0)
            if self._closed.is_set() or not self._wanted.is_set():
                return False
            self._wanted.clear()
            return True
        wait = self._next_read - self._clock()
        if wait > 0:
            self._closed.wait(min(wait, 1.0))
            return False
        return not self._closed.is_set()

    def _read(self, job: Job) -> None:
        """One full read into the store, or the rest of one that failed. Raises
        `CollectionError`."""
        store, progress = self.store, self._progress
        if progress.pages == 0:
            store.begin_pass()
            self._began = (self._wall(), self._clock(), self._cpu())
        self._next_read = self._began[1] + self._interval
        resumed = progress.pages
        first_page = threading.Event()  # set by the first page this call reads
        last_log = [self._clock()]

        def take(runs: list[Run]) -> None:
            if not first_page.is_set():
                first_page.set()
                if self._state.failure is not None:  # the page that failed answers now
                    self._update(failure=None)
                    log.info("reading the run list again from page %d", resumed + 1)
            store.put_runs(runs)

        def pace() -> None:  # before each page after the first one this call reads
            self._estimate(job)
            self._advance()
            if self._clock() - last_log[0] >= PROGRESS_EVERY:
                last_log[0] = self._clock()
                self._log_progress()
            self.wait_turn()

        def deadline() -> float | None:
            return None if self._state.mode == BACKGROUND or self._once else job.deadline

        run_list = self._source.read_runs(
            take, self.created, deadline=deadline, pace=pace, progress=progress
        )
        if self._state.mode == BACKGROUND and not self._once:
            self._verify_unseen()
        stats = store.end_pass()
        # Runs created while the list was read may have shifted runs across pages read at the
        # same time: the next head read covers as far as the list moved.
        self._head_pages = 1 + math.ceil(run_list.moved / max(1, run_list.page_size))
        started, began, cpu = self._began
        seconds = self._clock() - began
        pages = progress.pages
        warm, newest_before = self._state.complete, self._state.newest_first
        self._progress = Progress()
        state = self._update(
            complete=True,
            failure=None,
            last_success=self._wall(),
            view_started=started,
            full_read_seconds=seconds,
            total_count=run_list.total_count,
            newest_first=run_list.newest_first if not resumed else self._state.newest_first,
            progress=0.0,
            pages=pages,
        )
        log.log(
            logging.DEBUG if warm else logging.INFO,
            "read the whole run list: %d runs in %d pages, %.1fs (%d new, %d gone)",
            len(store),
            pages,
            seconds,
            stats.added,
            stats.removed,
        )
        if run_list.past_total:
            log.warning(
                "the API listed %d runs past its own totalCount: they are counted",
                run_list.past_total,
            )
        if state.newest_first != newest_before:
            self._order(state.newest_first)
        if self._state_file is not None and not self._once and not self._closed.is_set():
            self._save()
        self._after(seconds, self._cpu() - cpu, pages)

    def _verify_unseen(self) -> None:
        """Ask for the detail of each run the full read did not see (a few at most): a run
        that answers was skipped by paging and stays; one gone (404), or any failure, is left
        to the sweep."""
        unseen = self.store.unseen(VERIFY_AT_MOST)
        if not unseen:
            return
        kept = 0
        for project_id, name in unseen:
            self.wait_turn()
            try:
                exists = self._source.run_exists(project_id, name, self._clock() + self._timeout)
            except CollectionError as error:
                log.debug("run %s of project %s not verified: %s", name, project_id, error)
                continue
            if exists:
                self.store.mark((project_id, name))
                kept += 1
        log.debug("runs the full read did not see: %d, of which %d exist", len(unseen), kept)

    def _estimate(self, job: Job) -> None:
        """After the first page: a read on scrape estimated to overrun goes to the background."""
        if self._setting != "auto" or self._once or self._state.mode != SCRAPE:
            return
        progress = self._progress
        if progress.pages != 1 or progress.planned <= 1:
            return
        estimate = self._cost(self._source.latency, self._cpu() - self._began[2], progress.planned)
        if estimate > SWITCH_AT * self._timeout:
            self._switch(
                BACKGROUND,
                f"a full read of {progress.planned} pages would take about {estimate:.0f}s, "
                f"over {self._limit()}",
            )
            job.answered.set()

    def _cost(self, latency: float, cpu: float, pages: int) -> float:
        """A full read of `pages`, unpaced, from a request's latency (as answered: retries'
        waits are throttling or faults, not length) and a page's CPU: the latency overlaps
        `CONCURRENCY` pages at a time, the CPU does not."""
        rounds = 1 + math.ceil(max(0, pages - 1) / self._concurrency)
        return max(0.0, latency) * rounds + cpu * pages

    def _after(self, seconds: float, cpu: float, pages: int) -> None:
        """A full read ended: the mode it calls for."""
        if self._setting != "auto" or self._once:
            return
        if self._state.mode == SCRAPE:
            if seconds > SWITCH_AT * self._timeout:
                self._switch(BACKGROUND, f"a full read took {seconds:.1f}s of {self._limit()}")
            return
        estimate = self._cost(self._source.latency, cpu / max(1, pages), pages)
        held = self._clock() - self._switched_at >= SWITCH_HOLD
        if estimate < SWITCH_BACK * self._timeout and held:
            self._switch(SCRAPE, f"a full read would now take about {estimate:.1f}s")

    def _failed(self, error: CollectionError) -> None:
        """A failed full read: counted; logged once while the same failure goes on. A read the
        API contradicted (`inconsistent`) is abandoned: the next one starts anew, so what it
        took (runs past the list's end, say) is swept. Any other resumes where it failed."""
        self._count_error(error)
        if isinstance(error, InconsistentPagingError):
            self.store.abandon_pass()
            self._progress = Progress()
        before = self._state.failure
        self._update(failure=error, progress=self._share())
        again = before is not None and before.reason == error.reason
        where = f"; the next try resumes at page {self._progress.pages + 1}"
        if self._progress.pages == 0 or self._state.mode == SCRAPE:
            where = ""
        log.log(
            logging.DEBUG if again and self._state.mode == BACKGROUND else logging.WARNING,
            "collection failed (%s): %s%s",
            error.reason,
            error,
            where,
        )

    def _internal(self, error: Exception) -> CollectionError:
        """A bug: counted as `internal`, logged with its traceback; reading goes on, anew."""
        log.error("collection failed (internal error)", exc_info=error)
        failure = CollectionError("internal error while reading the run list")
        self._count_error(failure)
        self.store.abandon_pass()
        self._progress = Progress()
        self._update(failure=failure)
        return failure

    def _advance(self) -> None:
        """Publish the read's progress (pages are read on several threads: never backwards)."""
        share = self._share()
        with self._lock:
            if share > self._state.progress:
                self._state = replace(self._state, progress=share)

    def _share(self) -> float:
        progress = self._progress
        return min(1.0, progress.pages / progress.planned) if progress.planned else 0.0

    def _log_progress(self) -> None:
        """Where the first full read has got (at most every PROGRESS_EVERY seconds)."""
        progress, (_, began, _) = self._progress, self._began
        if self._state.complete or not progress.planned:
            return
        spent = self._clock() - began
        left = spent / max(1, progress.pages) * (progress.planned - progress.pages)
        log.info(
            "warming: read %d of %d pages of the run list (%d runs) in %.0fs, about %.0fs left",
            progress.pages,
            progress.planned,
            self.store.pass_seen(),
            spent,
            left,
        )

    def _order(self, newest_first: bool | None) -> None:
        if newest_first:
            log.debug("the run list is newest first: its head is read every %gs", HEAD_INTERVAL)
        elif newest_first is not None and self._state.mode == BACKGROUND:
            log.warning(
                "the run list is not newest first: runs created since the last full read show "
                "only after the next one"
            )

    def _switch(self, mode: str, why: str) -> None:
        with self._lock:
            if self._state.mode == mode:
                return
            self._state = replace(self._state, mode=mode)
            self._switched_at = self._clock()
        if mode == BACKGROUND:
            log.warning(
                "reading the run list in the background: %s; scrapes are answered from the "
                "store of runs (nsml_view_age_seconds says how old its last full read is)",
                why,
            )
        else:
            log.info("reading the run list on scrape again: %s", why)
            self._wanted.clear()

    # -- the head ------------------------------------------------------------------------------

    def _heads(self) -> None:
        while not self._closed.wait(HEAD_INTERVAL):
            state = self._state
            if state.mode == BACKGROUND and state.complete and state.newest_first:
                self.read_head()

    def read_head(self) -> None:
        """New runs from the head of a newest-first list. A failure is counted and logged (once
        while it goes on); it does not change `nsml_up`, which is about full reads."""
        store = self.store
        new = 0

        def take(runs: list[Run]) -> None:
            nonlocal new
            new += store.put_runs(runs)

        try:
            pages, total = self._source.read_head(
                store.__contains__,
                take,
                deadline=self._clock() + self._timeout,
                max_pages=max(self._state.pages, self._head_pages) + 1,
                min_pages=self._head_pages,
                pace=lambda: self.pace.wait(self._closed),
            )
        except CollectionError as error:
            self._count_error(error)
            log.log(
                logging.DEBUG if self._head_failing else logging.WARNING,
                "reading the run list's head failed (%s): %s",
                error.reason,
                error,
            )
            self._head_failing = True
            return
        except Exception:
            log.exception("reading the run list's head failed (internal error)")
            return
        self._head_failing = False
        self._head_pages = 1
        self._update(total_count=total)
        log.debug("read the run list's head: %d page(s), %d new run(s)", pages, new)

    # -- the state file ------------------------------------------------------------------------

    def _save(self) -> None:
        assert self._state_file is not None
        state = self._state
        meta = statefile.Meta(
            saved=self._wall(),
            last_success=state.last_success,
            view_started=state.view_started,
            full_read_seconds=state.full_read_seconds,
            total_count=state.total_count,
            newest_first=state.newest_first,
            pages=state.pages,
            mode=state.mode,
            timezone=str(self._zone),
        )
        statefile.save(Path(self._state_file), self.store, meta)

    def _load(self) -> None:
        if self._state_file is None:
            return
        saved = statefile.load(Path(self._state_file), timezone=str(self._zone))
        if saved is None:
            return
        try:
            loaded = self.store.adopt(saved.runs, saved.strings)
        except (IndexError, ValueError, OverflowError) as error:
            self.store.clear()
            log.warning("ignoring the saved store %s: malformed (%s)", self._state_file, error)
            return
        meta, mode = saved.meta, self._state.mode
        if self._setting == "auto" and meta.mode == BACKGROUND:
            mode = BACKGROUND
        self._update(
            complete=True,
            mode=mode,
            last_success=meta.last_success,
            view_started=meta.view_started,
            full_read_seconds=meta.full_read_seconds,
            total_count=meta.total_count,
            newest_first=meta.newest_first,
            pages=meta.pages,
        )
        log.info(
            "loaded %d runs from %s, read completely %.0fs ago: served now, reconciled by the "
            "next full read",
            loaded,
            self._state_file,
            self._wall() - meta.last_success,
        )
