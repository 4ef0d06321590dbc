"""The store of runs: every run of the list by identity, and the aggregates the metrics need.

A run is identified by (`projectId`, `runName`). Whatever reads the API writes here: a full read
(a *reconciliation pass*) puts every run it pages through, a read of the list's head puts the new
runs at its top, a run's detail sets its status, a 404 removes it. The store does not care in
which order these come, nor how often a run is put: a run put twice is one run, with its last
fields. So a list that shifts while it is paged (runs created, finished, deleted between two
pages) never makes a read fail: it only decides which runs the pass saw.

Reconciliation is mark and sweep. `begin_pass()` starts a new *generation*, the mark that `put`
stamps on a run; `end_pass()` removes every run that does not carry it: runs that existed before
the pass began and that it did not see. Runs a head read added during the pass carry the new mark
already, so they stay. A pass that failed goes on with its generation (`begin_pass()` again); one
whose reading the API contradicted is `abandon_pass()`-ed: what it stamped counts for nothing, and
the next pass sweeps whatever it alone had seen. A run that offset paging skipped (a run deleted
ahead of it pulled it onto a page already read) is not seen: the reader asks for its detail
before the sweep, and `mark()`s it if it still exists.

The aggregates are kept current as runs come and go, so a scrape costs work in the number of
series it serves, not in the number of runs: every metric is one `Aggregate`, fed each run's
`Record` with +1 as it enters and -1 as it leaves. Adding a run metric is one aggregate and one
family.

Memory: a run is one Python int in a per-project dict keyed by its name (a decimal name, NSML's
own numbering, kept as an int): its times in milliseconds and its strings as indexes into one
table of distinct strings. With the aggregates, about 150 bytes a run (docs/long-histories.md).

Threads: every method takes the store's one lock, briefly. Readers of the API may put runs from
several threads at once. `snapshot()` copies what it needs under the lock and builds the
`Snapshot` outside it; `end_pass()` sweeps a project at a time, so a scrape never waits for a
whole sweep.
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from math import inf
from typing import Protocol

from ..errors import InvalidResponseError
from ..nsml.models import Run
from ..nsml.models import to_milliseconds as api_milliseconds
from ..nsml.paging import RunKey
from .snapshot import CountKey, Histogram, HistogramKey, Record, Rules, Snapshot

#: The bits of a packed record, from the lowest: the pass mark (the generation of the full read
#: that last saw the run), then four string indexes (project name, run type, status, creator),
#: then updateTime and createTime in milliseconds (offset, so that a time before 1970 packs too).
_MARK_BITS, _STRING_BITS, _TIME_BITS = 8, 24, 46
_MARK_MASK = (1 << _MARK_BITS) - 1
#: Full reads abandoned in a row after which every run is stamped afresh, so that a generation
#: never comes round to one a run still carries.
_ABANDONED_AT_MOST = _MARK_MASK - 2
_STRING_MASK = (1 << _STRING_BITS) - 1
_TIME_MASK = (1 << _TIME_BITS) - 1
_TIME_OFFSET = 1 << (_TIME_BITS - 1)
_MAX_STRINGS = 1 << _STRING_BITS

Name = int | str  # a run name as kept: a canonical decimal as an int
Strings = tuple[str, str, str, str]  # creator, status, run type, project name: packing order


class Aggregate(Protocol):
    """One metric's running total over the runs in the store."""

    def change(self, record: Record, sign: int) -> None:
        """`record` entered the store (`sign` +1) or left it (-1)."""


def compact(name: str) -> Name:
    """A run name as it is kept: a canonical decimal (NSML numbers runs in order) as an int,
    which costs half a string; anything else as it is."""
    if name.isascii() and name.isdigit() and len(name) < 19 and (name == "0" or name[0] != "0"):
        return int(name)
    return name


def _milliseconds(run: Run, zone: tzinfo) -> tuple[int, int]:
    """A listed run's createTime and updateTime in milliseconds, if the store can keep them.
    Raises `InvalidResponseError` otherwise."""
    created = api_milliseconds(run["createTime"], zone)  # exact arithmetic: never overflows
    updated = api_milliseconds(run["updateTime"], zone)
    if -_TIME_OFFSET <= created < _TIME_OFFSET and -_TIME_OFFSET <= updated < _TIME_OFFSET:
        return created, updated
    raise InvalidResponseError(
        f"run {run['runName']} of project {run['projectId']}: createTime/updateTime "
        "is not a date and time the exporter can keep (years 856 to 3084)"
    )


def to_milliseconds(seconds: float) -> int:
    """The store keeps times to the millisecond (the API gives whole seconds)."""
    return round(seconds * 1000)


# -- the aggregates ---------------------------------------------------------------------------


class Counts:
    """`nsml_runs`: runs by (project_id, run_type, status), and each project's name."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.names: dict[str, str] = {}

    def change(self, record: Record, sign: int) -> None:
        key = (record.project_id, record.run_type, record.status)
        self.counts[key] += sign
        if not self.counts[key]:
            del self.counts[key]
        if sign > 0:
            self.names[record.project_id] = record.project


class Durations:
    """`nsml_run_duration_seconds`: updateTime minus createTime of finished runs. Sums are kept
    in whole milliseconds, so that runs leaving take away exactly what they brought."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.counts: dict[tuple[str, str, str], list[int]] = {}
        self.sums: Counter[tuple[str, str, str]] = Counter()

    def change(self, record: Record, sign: int) -> None:
        if record.status in self.rules.active_statuses:
            return
        key = (record.project_id, record.run_type, record.status)
        bounds = self.rules.duration_buckets
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(bounds) + 1)
        value = to_milliseconds(record.updated) - to_milliseconds(record.created)
        counts[bisect_left(bounds, value / 1000)] += sign  # value <= bound: that bound's bucket
        self.sums[key] += sign * value
        if not any(counts):
            del self.counts[key], self.sums[key]

    def histogram(self, key: tuple[str, str, str]) -> Histogram:
        return Histogram(list(self.counts[key]), self.sums[key] / 1000)


class FinishedTimes:
    """`nsml_run_finished_age_seconds`: the updateTimes of finished runs (whole milliseconds),
    sorted, per key, so that the histogram of their ages now costs a binary search per bucket,
    not a pass over the runs."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.times: dict[tuple[str, str, str], list[int]] = {}
        self.sums: Counter[tuple[str, str, str]] = Counter()

    def change(self, record: Record, sign: int) -> None:
        if record.status in self.rules.active_statuses:
            return
        key = (record.project_id, record.run_type, record.status)
        updated = to_milliseconds(record.updated)
        if sign > 0:
            insort(self.times.setdefault(key, []), updated)
            self.sums[key] += updated
            return
        times = self.times[key]
        del times[bisect_left(times, updated)]
        self.sums[key] -= updated
        if not times:
            del self.times[key], self.sums[key]

    def histogram(self, key: tuple[str, str, str], now: float) -> Histogram:
        """The ages at `now`, bucketed: a run aged at most `le` finished at or after now - le."""
        times = self.times[key]
        bounds = self.rules.finished_age_buckets
        at_most = [
            len(times) - bisect_left(times, to_milliseconds(now - bound)) for bound in bounds
        ]
        counts = [b - a for a, b in zip([0, *at_most], [*at_most, len(times)], strict=True)]
        return Histogram(counts, len(times) * now - self.sums[key] / 1000)


class Newest:
    """`nsml_project_last_created_timestamp_seconds`: each project's newest createTime. A
    removal of the newest run marks the project for a rescan at the next snapshot."""

    def __init__(self) -> None:
        self.newest: dict[str, float] = {}
        self.stale: set[str] = set()

    def change(self, record: Record, sign: int) -> None:
        project = record.project_id
        if sign > 0:
            if record.created > self.newest.get(project, -inf):
                self.newest[project] = record.created
        elif record.created >= self.newest.get(project, -inf):
            self.stale.add(project)


class Series:
    """Per-run series: the runs whose status is in `RUN_SERIES_STATUSES`."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.runs: dict[RunKey, Record] = {}

    def change(self, record: Record, sign: int) -> None:
        if record.status not in self.rules.series_statuses:
            return
        if sign > 0:
            self.runs[record.key] = record
        else:
            self.runs.pop(record.key, None)


# -- the store ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PassStats:
    """What one reconciliation pass did to the store."""

    seen: int = 0  # distinct runs it put
    added: int = 0  # of those, runs the store did not hold
    removed: int = 0  # runs the sweep removed


def unpack(strings: list[str], project_id: str, name: Name, packed: int) -> Record:
    """A packed record, its strings read from `strings`."""
    packed >>= _MARK_BITS
    project = strings[packed & _STRING_MASK]
    packed >>= _STRING_BITS
    run_type = strings[packed & _STRING_MASK]
    packed >>= _STRING_BITS
    status = strings[packed & _STRING_MASK]
    packed >>= _STRING_BITS
    creator = strings[packed & _STRING_MASK]
    packed >>= _STRING_BITS
    updated = ((packed & _TIME_MASK) - _TIME_OFFSET) / 1000
    created = ((packed >> _TIME_BITS) - _TIME_OFFSET) / 1000
    return Record(project_id, project, str(name), run_type, status, creator, created, updated)


class RunStore:
    """Every run by identity, with the aggregates kept current. Thread-safe (see the module)."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._lock = threading.RLock()  # held by `put_runs` around `_put`
        self._reset()

    def _reset(self) -> None:
        rules = self.rules
        self._runs: dict[str, dict[Name, int]] = {}  # project_id -> name -> packed record
        self._strings: list[str] = []
        self._index: dict[str, int] = {}
        self._mark = 0  # the generation stamped by `put`
        self._pass: PassStats | None = None
        self._abandoned = 0  # passes abandoned since the last complete one
        self._counts = Counts()
        self._durations = Durations(rules)
        self._finished = FinishedTimes(rules)
        self._newest = Newest()
        self._series = Series(rules)
        self._aggregates: tuple[Aggregate, ...] = (
            self._counts,
            self._durations,
            self._finished,
            self._newest,
            self._series,
        )
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        """Forget every run (a saved store that would not load)."""
        with self._lock:
            self._reset()

    def __contains__(self, key: RunKey) -> bool:
        with self._lock:
            names = self._runs.get(key[0])
            return names is not None and compact(key[1]) in names

    # -- packing (the lock held) ----------------------------------------------------------------

    def _string(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = len(self._strings)
            if index >= _MAX_STRINGS:
                raise InvalidResponseError("more distinct names than the store can hold")
            self._strings.append(text)
            self._index[text] = index
        return index

    def _pack(self, created: int, updated: int, strings: Strings) -> int:
        """A record packed, times in milliseconds, with no mark (the lock held)."""
        index = self._index
        packed = (created + _TIME_OFFSET) << _TIME_BITS | (updated + _TIME_OFFSET)
        for text in strings:
            found = index.get(text)
            packed = packed << _STRING_BITS | (self._string(text) if found is None else found)
        return packed << _MARK_BITS

    def _counted(self, record: Record) -> bool:
        projects = self.rules.projects
        return not projects or bool({record.project_id, record.project} & projects)

    def _enter(self, record: Record, sign: int) -> None:
        if self._counted(record):
            for aggregate in self._aggregates:
                aggregate.change(record, sign)

    # -- writing --------------------------------------------------------------------------------

    def put_runs(self, runs: Iterable[Run]) -> int:
        """Runs as the API lists them (what the readers put: a page at a time). Returns how
        many the store did not hold. Raises `InvalidResponseError` for a time the store cannot
        keep; the runs before it are put.

        Most runs put have not changed since the last read: for them no `Record` is made and
        nothing but their mark is written. That path is written out inline (no helper calls,
        no intermediate tuples), under one hold of the lock for the page: it is most of a
        read's CPU on a small history (docs/long-histories.md)."""
        zone, index, new = self.rules.zone, self._index, 0
        with self._lock:
            mark, stats, projects = self._mark, self._pass, self._runs
            for run in runs:
                created, updated = _milliseconds(run, zone)
                project_id, run_name = run["projectId"], run["runName"]
                name = compact(run_name)
                names = projects.get(project_id)
                old = None if names is None else names.get(name)
                if old is not None:
                    creator = index.get(run["creator"])
                    status = index.get(run["status"])
                    run_type = index.get(run.get("runType", ""))
                    project = index.get(run["projectName"])
                    if not (
                        creator is None or status is None or run_type is None or project is None
                    ):
                        packed = (created + _TIME_OFFSET) << _TIME_BITS | updated + _TIME_OFFSET
                        packed = (packed << _STRING_BITS | creator) << _STRING_BITS | status
                        packed = (packed << _STRING_BITS | run_type) << _STRING_BITS | project
                        if old >> _MARK_BITS == packed:
                            if stats is not None and old & _MARK_MASK != mark:
                                stats.seen += 1
                            names[name] = packed << _MARK_BITS | mark  # type: ignore[index]
                            continue
                strings = (
                    run["creator"],
                    run["status"],
                    run.get("runType", ""),
                    run["projectName"],
                )
                new += self._put(project_id, run_name, created, updated, strings)
        return new

    def put(self, record: Record) -> bool:
        """`record` in place of the run with its identity: see `_put`."""
        return self._put(
            record.project_id,
            record.run,
            to_milliseconds(record.created),
            to_milliseconds(record.updated),
            (record.creator, record.status, record.run_type, record.project),
        )

    def _put(self, project_id: str, run: str, created: int, updated: int, strings: Strings) -> bool:
        """The run in place of the one with its identity (its strings in packing order),
        marked as seen by the pass under way (if any). True when the store did not hold it."""
        name = compact(run)
        with self._lock:
            runs = self._runs.get(project_id)
            if runs is None:
                runs = self._runs[project_id] = {}
            old = runs.get(name)
            packed = self._pack(created, updated, strings) | self._mark
            if self._pass is not None and (old is None or old & _MARK_MASK != self._mark):
                self._pass.seen += 1
            if old is not None and old >> _MARK_BITS == packed >> _MARK_BITS:
                runs[name] = packed  # unchanged: only its mark
                return False
            runs[name] = packed
            if old is not None:
                self._enter(unpack(self._strings, project_id, name, old), -1)
            else:
                self._size += 1
                if self._pass is not None:
                    self._pass.added += 1
            creator, status, run_type, project = strings
            record = Record(
                project_id, project, run, run_type, status, creator, created / 1000, updated / 1000
            )
            self._enter(record, +1)
            return old is None

    def set_status(self, key: RunKey, status: str, at: float) -> bool:
        """The run's status as its detail gives it. A detail has no updateTime: a changed
        status takes `at` (when it was read) as its updateTime until a read of the list gives
        the real one. False when the store does not hold the run or nothing changed."""
        name = compact(key[1])
        with self._lock:
            runs = self._runs.get(key[0], {})
            old = runs.get(name)
            if old is None:
                return False
            record = unpack(self._strings, key[0], name, old)
            if record.status == status:
                return False
            updated = max(to_milliseconds(at), to_milliseconds(record.created))
            strings = (record.creator, status, record.run_type, record.project)
            packed = self._pack(to_milliseconds(record.created), updated, strings)
            runs[name] = packed | old & _MARK_MASK
            self._enter(record, -1)
            self._enter(record._replace(status=status, updated=updated / 1000), +1)
            return True

    def remove(self, key: RunKey) -> bool:
        """Forget the run (its detail answered 404). False when it was not held."""
        name = compact(key[1])
        with self._lock:
            runs = self._runs.get(key[0])
            old = None if runs is None else runs.pop(name, None)
            if old is None:
                return False
            self._gone(key[0], name, old)
            return True

    def _gone(self, project_id: str, name: Name, packed: int) -> None:
        self._size -= 1
        self._enter(unpack(self._strings, project_id, name, packed), -1)

    # -- reconciliation -------------------------------------------------------------------------

    def begin_pass(self) -> None:
        """A reconciliation pass starts: runs put from now on carry a new generation. A pass
        already under way (one that failed, to be resumed) goes on with its own."""
        with self._lock:
            if self._pass is not None:
                return
            if self._abandoned >= _ABANDONED_AT_MOST:  # stamp every run as not seen
                unseen = (self._mark + 1) & _MARK_MASK
                for runs in self._runs.values():
                    for name, packed in runs.items():
                        runs[name] = packed & ~_MARK_MASK | unseen
                self._mark, self._abandoned = unseen, 0
            self._mark = (self._mark + 1) & _MARK_MASK
            self._pass = PassStats()

    def abandon_pass(self) -> None:
        """The pass under way read a list the API contradicted: the next pass starts anew, and
        sweeps the runs only this one saw."""
        with self._lock:
            if self._pass is not None:
                self._pass = None
                self._abandoned += 1

    def unseen(self, limit: int) -> list[RunKey] | None:
        """The runs the pass under way has not seen, if there are at most `limit` (else None):
        deleted, or skipped by offset paging while the list shifted. Scanned a project at a
        time."""
        with self._lock:
            mark, projects = self._mark, list(self._runs)
        found: list[RunKey] = []
        for project_id in projects:
            with self._lock:
                runs = self._runs.get(project_id, {})
                names = [n for n, p in runs.items() if p & _MARK_MASK != mark]
            found += [(project_id, str(name)) for name in names]
            if len(found) > limit:
                return None
        return found

    def mark(self, key: RunKey) -> None:
        """The run exists (its detail answered): the sweep keeps it."""
        name = compact(key[1])
        with self._lock:
            runs = self._runs.get(key[0], {})
            if name in runs:
                runs[name] = runs[name] & ~_MARK_MASK | self._mark

    def end_pass(self) -> PassStats:
        """The pass read the whole list: remove the runs it did not see."""
        with self._lock:
            stats, self._pass = self._pass or PassStats(), None
            mark, self._abandoned = self._mark, 0
            projects = list(self._runs)
        for project_id in projects:  # a project at a time: scrapes get the lock between
            with self._lock:
                runs = self._runs.get(project_id, {})
                unseen = [(n, p) for n, p in runs.items() if p & _MARK_MASK != mark]
                for name, packed in unseen:
                    del runs[name]
                    self._gone(project_id, name, packed)
                stats.removed += len(unseen)
                if not runs:
                    self._runs.pop(project_id, None)
        return stats

    def pass_seen(self) -> int:
        """Distinct runs the pass under way has put so far."""
        with self._lock:
            return 0 if self._pass is None else self._pass.seen

    # -- reading --------------------------------------------------------------------------------

    def statuses(self) -> set[str]:
        with self._lock:
            return {status for _, _, status in self._counts.counts}

    def snapshot(self, statuses: Iterable[str], *, now: float, duration: float) -> Snapshot:
        """The metrics of every run held, as of `now`: counts zero-filled with `statuses`
        (known and ever seen, which must include every status held), per-run series for the
        oldest `MAX_RUN_SERIES` eligible runs."""
        rules = self.rules
        with self._lock:
            self._rescan_newest()
            counts = dict(self._counts.counts)
            names = dict(self._counts.names)
            durations = {key: self._durations.histogram(key) for key in self._durations.counts}
            finished = {key: self._finished.histogram(key, now) for key in self._finished.times}
            newest = dict(self._newest.newest)
            eligible = list(self._series.runs.values())
        filled: dict[CountKey, int] = {}
        statuses = list(statuses)
        for project_id, run_type in sorted({key[:2] for key in counts}):
            for status in statuses:
                filled[project_id, names[project_id], status, run_type] = counts.get(
                    (project_id, run_type, status), 0
                )
        oldest = heapq.nsmallest(
            rules.max_run_series, eligible, key=lambda r: (r.created, r.project_id, r.run)
        )

        def named(
            histograms: dict[tuple[str, str, str], Histogram],
        ) -> dict[HistogramKey, Histogram]:
            return {(p, names[p], t, s): h for (p, t, s), h in sorted(histograms.items())}

        return Snapshot(
            ok=True,
            duration=duration,
            finished=now,
            counts=filled,
            series=tuple(oldest),
            omitted=max(0, len(eligible) - rules.max_run_series),
            durations=named(durations),
            finished_ages=named(finished),
            last_created={(p, names[p]): at for p, at in sorted(newest.items()) if p in names},
        )

    def _rescan_newest(self) -> None:
        """Each project whose newest run left: its newest now (the lock held)."""
        newest = self._newest
        for project_id in newest.stale:
            runs = self._runs.get(project_id, {})
            records = (unpack(self._strings, project_id, n, p) for n, p in runs.items())
            times = [r.created for r in records if self._counted(r)]
            if times:
                newest.newest[project_id] = max(times)
            else:
                newest.newest.pop(project_id, None)
        newest.stale.clear()

    # -- saving ---------------------------------------------------------------------------------

    def dump(self, chunk: int = 10_000) -> Iterator[tuple[str, list[tuple[Name, int]]]]:
        """The runs as (project id, [(name, packed record)]), `chunk` at a time, each copied
        under the lock: a save never holds the lock for long, nor a copy of the whole store."""
        with self._lock:
            projects = list(self._runs)
        for project_id in projects:
            with self._lock:
                names = list(self._runs.get(project_id, {}))
            for start in range(0, len(names), chunk):
                with self._lock:
                    runs = self._runs.get(project_id, {})
                    items = [(n, runs[n]) for n in names[start : start + chunk] if n in runs]
                yield project_id, items

    def strings(self) -> list[str]:
        """The table the packed records index (it only grows)."""
        with self._lock:
            return list(self._strings)

    def adopt(self, runs: dict[str, dict[Name, int]], strings: list[str]) -> int:
        """Take a saved store's runs as the store's own (nothing is copied) and make the
        aggregates from them; the runs adopted. Raises `IndexError` for a record whose strings
        are not in `strings` (a damaged file): `clear()` then."""
        with self._lock:
            self._reset()
            self._strings, self._index = strings, {text: n for n, text in enumerate(strings)}
            self._runs = runs
            for project_id, names in runs.items():
                for name, packed in names.items():
                    names[name] = packed & ~_MARK_MASK  # seen by no pass yet
                    self._enter(unpack(strings, project_id, name, packed), +1)
                    self._size += 1
            return self._size
