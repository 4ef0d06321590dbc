"""The store of runs: identity, aggregates as runs come and go, reconciliation by mark and sweep.

Runs are decoded from JSON as the API sends them. The stateful test drives the store with random
interleavings of page reads, runs created, deleted and finished, head reads, details, failed and
resumed passes, and checks it against a model: after every step the aggregates kept as runs came
and went equal those of a store built afresh from its runs, and after a complete pass the store
holds every run of the list as it is, and besides them only runs deleted during that pass (they
go at the next one: "never further from the truth than the changes of one reconciliation").
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from exporter.collection.snapshot import Histogram, Record, Rules, Snapshot
from exporter.collection.store import RunStore, unpack
from exporter.errors import InvalidResponseError
from exporter.nsml.models import decode_page
from tests.helpers.runs import api_run

UTC = ZoneInfo("UTC")
IN_PROGRESS, COMPLETED, FAILED = "RUN_STATE_IN_PROGRESS", "RUN_STATE_COMPLETED", "RUN_STATE_FAILED"
STATUSES = [IN_PROGRESS, COMPLETED]
BOUNDS = (60.0, 300.0)
NOW = 2e9


def rules(**values: Any) -> Rules:
    base: dict[str, Any] = {
        "projects": frozenset(),
        "series_statuses": frozenset({IN_PROGRESS}),
        "max_run_series": 1000,
        "zone": UTC,
        "duration_buckets": BOUNDS,
        "finished_age_buckets": BOUNDS,
    }
    base.update(values)
    return Rules(**base)


def records(runs: list[dict[str, Any]], rule: Rules) -> list[Record]:
    """The runs as the store keeps them (each read back from a store of its own)."""
    page = decode_page(json.dumps({"runList": runs, "totalCount": len(runs)}).encode())
    found = []
    for run in page["runList"]:
        store = RunStore(rule)
        store.put_runs([run])
        (record,) = contents(store)
        found.append(record)
    return found


def store_of(runs: list[dict[str, Any]], **values: Any) -> RunStore:
    store = RunStore(rules(**values))
    page = decode_page(json.dumps({"runList": runs, "totalCount": len(runs)}).encode())
    store.put_runs(page["runList"])
    return store


def snapshot(runs: list[dict[str, Any]], now: float = NOW, **values: Any) -> Snapshot:
    return store_of(runs, **values).snapshot(STATUSES, now=now, duration=0.1)


def finished_run(name: str, created: str, updated: str, project: str = "p1") -> dict[str, Any]:
    return api_run(project, name, COMPLETED, created=created, updateTime=updated)


def served(snap: Snapshot) -> dict[str, Any]:
    """Everything a snapshot serves about runs, comparable with ==."""

    def hist(histograms: dict[Any, Histogram]) -> dict[Any, Any]:
        return {k: (h.counts, round(h.total, 3)) for k, h in histograms.items()}

    return {
        "counts": {k: v for k, v in snap.counts.items() if v},
        "series": snap.series,
        "omitted": snap.omitted,
        "durations": hist(snap.durations),
        "ages": hist(snap.finished_ages),
        "newest": snap.last_created,
    }


def contents(store: RunStore) -> set[Record]:
    strings = store.strings()
    return {
        unpack(strings, project, name, packed)
        for project, items in store.dump(chunk=7)
        for name, packed in items
    }


# -- what the metrics need ------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "bucket"), [(0, 0), (59, 0), (60, 0), (61, 1), (300, 1)])
def test_a_duration_on_a_bound_lands_in_that_bounds_bucket(seconds: int, bucket: int) -> None:
    """Bug caught: `bisect_right`, which puts exactly 60 s in the bucket above `le="60.0"`."""
    run = finished_run("1", "2024-09-03 10:00:00", f"2024-09-03 10:{seconds // 60:02d}:00")
    run["updateTime"] = f"2024-09-03 10:{seconds // 60:02d}:{seconds % 60:02d}"
    (histogram,) = snapshot([run]).durations.values()
    assert histogram.counts == [int(i == bucket) for i in range(3)]
    assert histogram.total == seconds


def test_the_newest_created_time_counts_runs_in_progress_too() -> None:
    """Bug caught: the newest createTime taken from finished runs only."""
    snap = snapshot(
        [
            finished_run("1", "2024-09-03 09:00:00", "2024-09-03 09:30:00"),
            api_run("p1", "2", IN_PROGRESS, created="2024-09-03 11:00:00"),
        ]
    )
    assert snap.last_created[("p1", "name-p1")] == 1725361200.0  # 2024-09-03 11:00:00 UTC


def test_the_newest_created_time_is_per_project_and_falls_back_when_the_newest_goes() -> None:
    """Bug caught: a project's newest run kept after it was removed."""
    store = store_of(
        [
            finished_run("1", "2024-09-03 09:00:00", "2024-09-03 09:30:00", project="a"),
            finished_run("2", "2024-09-03 08:00:00", "2024-09-03 08:30:00", project="a"),
            finished_run("1", "2024-09-03 10:00:00", "2024-09-03 10:30:00", project="b"),
        ]
    )
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert snap.last_created[("a", "name-a")] + 3600 == snap.last_created[("b", "name-b")]
    assert store.remove(("a", "1"))
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert snap.last_created[("a", "name-a")] + 7200 == snap.last_created[("b", "name-b")]


@pytest.mark.parametrize(("cap", "kept", "omitted"), [(0, 0, 3), (2, 2, 1), (3, 3, 0), (4, 3, 0)])
def test_omitted_counts_only_runs_eligible_for_series(cap: int, kept: int, omitted: int) -> None:
    """Bug caught: `omitted` counted over all runs (3 in progress + 5 completed, cap 2 would
    say 6 instead of 1)."""
    runs = [
        api_run("p1", f"live{n}", IN_PROGRESS, created=f"2024-09-03 1{n}:00:00") for n in range(3)
    ]
    runs += [
        finished_run(f"done{n}", "2024-09-03 08:00:00", "2024-09-03 08:10:00") for n in range(5)
    ]
    snap = snapshot(runs, max_run_series=cap)
    assert len(snap.series) == kept
    assert snap.omitted == omitted


def test_the_oldest_runs_keep_their_series_under_the_cap() -> None:
    runs = [
        api_run("p1", "new", IN_PROGRESS, created="2024-09-03 12:00:00"),
        api_run("p1", "old", IN_PROGRESS, created="2024-09-01 12:00:00"),
        api_run("p1", "mid", IN_PROGRESS, created="2024-09-02 12:00:00"),
    ]
    snap = snapshot(runs, max_run_series=2)
    assert [record.run for record in snap.series] == ["old", "mid"]


@pytest.mark.parametrize(("age", "bucket"), [(-5, 0), (60, 0), (61, 1), (300, 1), (301, 2)])
def test_finished_age_is_now_minus_update_time(age: int, bucket: int) -> None:
    """Bugs caught: ages measured from another moment than the snapshot's, or a run on a
    bound counted above it. A run finished "in the future" (clock skew) is aged 0 or less."""
    updated = 1725357600.0  # 2024-09-03 10:00:00 UTC
    snap = snapshot(
        [finished_run("1", "2024-09-03 09:00:00", "2024-09-03 10:00:00")], now=updated + age
    )
    (ages,) = snap.finished_ages.values()
    assert ages.counts == [int(i == bucket) for i in range(3)]
    assert ages.total == age


def test_the_projects_filter_counts_only_those_projects_but_stores_every_run() -> None:
    """Bug caught: runs of other projects dropped from the store, so that the head read takes
    them for new every time."""
    store = store_of([api_run("p1", "1"), api_run("p2", "1")], projects=frozenset({"name-p2"}))
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert {key[0] for key in snap.counts} == {"p2"}
    assert ("p1", "1") in store and len(store) == 2


# -- identity and change --------------------------------------------------------------------


def test_a_run_put_twice_is_one_run_with_its_last_fields() -> None:
    """Bug caught: a run seen on two pages (the list shifted) counted twice, or its first
    status kept."""
    store = RunStore(rules())
    live, done = records(
        [
            api_run("p1", "7", IN_PROGRESS),
            finished_run("7", "2024-09-03 10:24:54", "2024-09-03 10:30:00"),
        ],
        store.rules,
    )
    assert store.put(live) is True
    assert store.put(done) is False
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert served(snap)["counts"] == {("p1", "name-p1", COMPLETED, "NOTEBOOK"): 1}
    assert snap.series == () and len(store) == 1
    (histogram,) = snap.durations.values()
    assert histogram.total == 306.0


def test_names_that_only_look_alike_are_different_runs() -> None:
    """Bug caught: "01" kept as the number 1, merging two runs into one."""
    store = store_of([api_run("p1", name) for name in ("1", "01", "1", "\uff11", "p-1")])
    assert len(store) == 4
    assert ("p1", "01") in store and ("p2", "1") not in store
    assert {record.run for record in contents(store)} == {"1", "01", "\uff11", "p-1"}


def test_a_status_from_a_detail_moves_the_run_and_dates_its_finish() -> None:
    """Bugs caught: a finished run (read from its detail) still counted in progress, its
    duration left out, or an unchanged status counted as a change."""
    store = store_of([api_run("p1", "1", IN_PROGRESS, created="2024-09-03 10:00:00")])
    assert not store.set_status(("p1", "1"), IN_PROGRESS, 1725357700.0)
    assert not store.set_status(("p1", "nope"), COMPLETED, 1725357700.0)
    (before,) = contents(store)
    assert store.set_status(("p1", "1"), COMPLETED, 1725357660.0)  # read 60 s after creation
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert served(snap)["counts"] == {("p1", "name-p1", COMPLETED, "NOTEBOOK"): 1}
    assert snap.series == ()  # no longer in progress: its per-run series go
    (histogram,) = snap.durations.values()
    assert (histogram.counts, histogram.total) == ([1, 0, 0], 60.0)
    (after,) = contents(store)
    assert after == before._replace(status=COMPLETED, updated=1725357660.0)


def test_a_sweep_removes_what_the_pass_did_not_see_and_keeps_what_came_during_it() -> None:
    """Bugs caught: a deleted run kept for ever, or a run created during the pass (read from
    the head) swept as unseen."""
    store = store_of([api_run("p1", str(n)) for n in range(5)])
    store.begin_pass()
    for record in records([api_run("p1", str(n)) for n in (0, 1, 3)], store.rules):
        store.put(record)
    (head,) = records([api_run("p1", "new")], store.rules)
    store.put(head)
    stats = store.end_pass()
    assert {record.run for record in contents(store)} == {"0", "1", "3", "new"}
    assert (stats.seen, stats.added, stats.removed) == (4, 1, 2)


def test_a_failed_pass_goes_on_with_its_mark_so_a_deleted_run_is_still_swept() -> None:
    """Bug caught: a pass begun again after one that failed flipping the mark back, so every
    run looked seen and nothing deleted was ever removed."""
    store = store_of([api_run("p1", str(n)) for n in range(3)])
    store.begin_pass()  # fails before its first page
    store.begin_pass()  # the retry
    for record in records([api_run("p1", "0"), api_run("p1", "2")], store.rules):
        store.put(record)
    store.end_pass()
    assert {record.run for record in contents(store)} == {"0", "2"}


def test_an_abandoned_pass_leaves_nothing_it_alone_saw_after_the_next() -> None:
    """Bugs caught: runs from a read the API contradicted (phantoms past the list's end) kept
    for ever because the next pass resumed its mark; or a deleted run kept because a new pass
    reused an old generation."""
    store = store_of([api_run("p1", str(n)) for n in range(3)])
    store.begin_pass()
    for record in records([api_run("p1", "0"), api_run("p1", "phantom")], store.rules):
        store.put(record)
    store.abandon_pass()
    store.begin_pass()
    for record in records([api_run("p1", "0"), api_run("p1", "1")], store.rules):
        store.put(record)
    store.end_pass()
    assert {record.run for record in contents(store)} == {"0", "1"}


def test_generations_never_come_round_to_a_runs_own() -> None:
    """Bug caught: after 255 abandoned passes the generation wrapping onto the one a run kept
    from the last complete pass, so a deleted run looked seen."""
    both = [api_run("p1", "1"), api_run("p1", "2")]
    store = store_of(both)
    store.begin_pass()
    for record in records(both, store.rules):
        store.put(record)
    store.end_pass()  # both carry this generation now
    for _ in range(255):  # the next generation would be the one both runs carry
        store.begin_pass()
        store.abandon_pass()
    store.begin_pass()
    (one,) = records([api_run("p1", "1")], store.rules)
    store.put(one)
    store.end_pass()
    assert {record.run for record in contents(store)} == {"1"}


def test_a_run_gone_from_its_detail_leaves_every_aggregate() -> None:
    store = store_of(
        [
            api_run("p1", "1", IN_PROGRESS),
            finished_run("2", "2024-09-03 10:00:00", "2024-09-03 10:00:30"),
        ]
    )
    assert store.remove(("p1", "1")) and store.remove(("p1", "2"))
    assert not store.remove(("p1", "2"))
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert served(snap) == served(RunStore(store.rules).snapshot([], now=NOW, duration=0))
    assert len(store) == 0


def test_times_with_fractions_leave_exactly_what_they_brought() -> None:
    """Bug caught: a removal looking for a float that packing rounded (an ISO time with
    microseconds), so the sorted finish times lost the wrong run, or kept a residue."""
    run = finished_run("1", "2024-09-03T10:00:00.123456", "2024-09-03T10:05:00.987654")
    store = store_of([run])
    store.remove(("p1", "1"))
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert snap.durations == {} and snap.finished_ages == {}


def test_a_held_run_that_finished_moves_out_of_its_series_and_counts() -> None:
    """Bug caught: a held run whose page changed written into its record without leaving and
    entering the aggregates (the "unchanged" test of `put_runs` inverted): the run finished,
    its record says so, but `nsml_runs` still counts it in progress, with its series."""
    live = api_run("p1", "1", IN_PROGRESS)
    store = store_of([live, api_run("p1", "2", COMPLETED)])
    done = {**live, "status": COMPLETED, "updateTime": "2024-09-03 11:00:00"}
    store.put_runs(
        decode_page(json.dumps({"runList": [done], "totalCount": 1}).encode())["runList"]
    )
    assert served(store.snapshot(STATUSES, now=NOW, duration=0)) == served(
        snapshot([done, api_run("p1", "2", COMPLETED)])
    )


@pytest.mark.parametrize(
    ("field", "attribute"),
    [
        ("creator", "creator"),
        ("status", "status"),
        ("runType", "run_type"),
        ("projectName", "project"),
    ],
)
def test_a_held_run_whose_field_becomes_a_string_never_seen_takes_it(
    field: str, attribute: str
) -> None:
    """Bug caught: the path for a run already held taking a string the store has never seen
    for one it knows (its lookups' `or` as `and`): the page fails with a `TypeError`, or the
    run keeps its old value."""
    before = api_run("p1", "1", IN_PROGRESS)
    store = store_of([before, api_run("p1", "2", COMPLETED)])
    page = {"runList": [{**before, field: "never-seen"}], "totalCount": 1}
    assert store.put_runs(decode_page(json.dumps(page).encode())["runList"]) == 0
    (record,) = [record for record in contents(store) if record.run == "1"]
    assert getattr(record, attribute) == "never-seen"


# -- the stateful test ----------------------------------------------------------------------

NAMES = st.integers(min_value=0, max_value=30).map(str)
PROJECTS = st.sampled_from(["p1", "p2"])


def listed(records: list[Record]) -> list[Any]:
    """The records as a page lists them, decoded: what the readers give `put_runs`."""

    def when(moment: float) -> str:
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")

    runs = [
        api_run(
            r.project_id,
            r.run,
            r.status,
            created=when(r.created),
            updateTime=when(r.updated),
            runType=r.run_type,
            projectName=r.project,
            creator=r.creator,
        )
        for r in records
    ]
    return list(
        decode_page(json.dumps({"runList": runs, "totalCount": len(runs)}).encode())["runList"]
    )


class StoreMachine(RuleBasedStateMachine):
    """The store against a model of the API's list (`truth`), under any interleaving. Pages
    and heads go in through `put_runs` as the readers put them, details through `set_status`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rules = rules(max_run_series=3)
        self.store = RunStore(self.rules)
        self.truth: dict[tuple[str, str], Record] = {}
        self.clock = 1725357600.0
        self.passing = False
        self.deleted: set[tuple[str, str]] = set()  # since the pass under way began

    def _record(self, project: str, name: str, status: str, updated: float) -> Record:
        return Record(project, f"name-{project}", name, "TRAIN", status, "u", self.clock, updated)

    @rule(project=PROJECTS, name=NAMES, live=st.booleans())
    def create(self, project: str, name: str, live: bool) -> None:
        self.clock += 7
        if (project, name) not in self.truth:
            status = IN_PROGRESS if live else FAILED
            self.truth[project, name] = self._record(project, name, status, self.clock + 30)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        if self.truth:
            key = data.draw(st.sampled_from(sorted(self.truth)))
            del self.truth[key]
            self.deleted.add(key)

    @rule(data=st.data(), status=st.sampled_from([COMPLETED, FAILED]))
    def finish(self, data: st.DataObject, status: str) -> None:
        if self.truth:
            key = data.draw(st.sampled_from(sorted(self.truth)))
            self.clock += 61
            self.truth[key] = self.truth[key]._replace(status=status, updated=self.clock)

    @rule()
    def begin(self) -> None:
        if not self.passing:
            self.deleted = set()
        self.store.begin_pass()
        self.passing = True

    @precondition(lambda self: self.passing)
    @rule(data=st.data())
    def read_pages(self, data: st.DataObject) -> None:
        """Some runs of the list as it is now: a page, maybe one already read."""
        if self.truth:
            keys = data.draw(st.lists(st.sampled_from(sorted(self.truth)), max_size=5))
            self._put_page([self.truth[key] for key in keys])

    @rule(count=st.integers(min_value=1, max_value=4))
    def read_head(self, count: int) -> None:
        self._put_page(sorted(self.truth.values(), key=lambda r: -r.created)[:count])

    def _put_page(self, page: list[Record]) -> None:
        """`put_runs` of a page: it says how many runs of it the store did not hold."""
        held = {record.key for record in contents(self.store)}
        new = len({record.key for record in page} - held)
        assert self.store.put_runs(listed(page)) == new

    @rule(data=st.data())
    def read_detail(self, data: st.DataObject) -> None:
        held = sorted(record.key for record in contents(self.store))
        if not held:
            return
        key = data.draw(st.sampled_from(held))
        if key in self.truth:
            self.store.set_status(key, self.truth[key].status, self.clock)
        else:
            self.store.remove(key)  # the detail answered 404

    @precondition(lambda self: self.passing)
    @rule(name=NAMES)
    def lie_then_abandon(self, name: str) -> None:
        """A page lists a run that does not exist (past the list's end, say); the read finds
        the list inconsistent and is abandoned."""
        if ("p3", name) not in self.truth:
            self.store.put(self._record("p3", name, IN_PROGRESS, self.clock))
        self.store.abandon_pass()
        self.passing = False

    @precondition(lambda self: self.passing)
    @rule()
    def complete(self) -> None:
        """The pass reads what it had not read yet, to the list's end, and sweeps."""
        self._put_page(list(self.truth.values()))
        self.store.end_pass()
        self.passing = False
        held = {record.key: record for record in contents(self.store)}
        assert {key: held.get(key) for key in self.truth} == self.truth
        assert set(held) - set(self.truth) <= self.deleted

    @invariant()
    def aggregates_match_a_store_built_afresh(self) -> None:
        again = RunStore(self.rules)
        for record in contents(self.store):
            again.put(record)
        now = self.clock + 100
        mine = self.store.snapshot(STATUSES, now=now, duration=0)
        fresh = again.snapshot(STATUSES, now=now, duration=0)
        assert served(mine) == served(fresh)
        assert len(self.store) == len(again)


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_the_store_against_a_model = StoreMachine.TestCase


# -- unknown runs, the pass's count, saving ---------------------------------------------------


def test_a_run_of_a_project_the_store_never_held_is_no_error() -> None:
    """Bug caught: a detail's status, a 404 or a check for a run of a project the store has
    no run of (deleted meanwhile) raising instead of being ignored."""
    store = store_of([api_run("p1", "1")])
    assert store.set_status(("p9", "1"), COMPLETED, NOW) is False
    assert store.remove(("p9", "1")) is False
    store.mark(("p9", "1"))
    assert len(store) == 1 and ("p9", "1") not in store


def test_the_pass_counts_the_distinct_runs_it_saw() -> None:
    """Bug caught: warming's log line counting runs seen twice (a run pushed across a page),
    or counting without a pass."""
    store = store_of([api_run("p1", str(n)) for n in range(3)])
    assert store.pass_seen() == 0
    store.begin_pass()
    page = [api_run("p1", "0"), api_run("p1", "1"), api_run("p1", "1"), api_run("p1", "new")]
    for record in records(page, store.rules):
        store.put(record)
    assert store.pass_seen() == 3


def test_a_saved_store_adopted_serves_the_same_and_sweeps_from_scratch() -> None:
    """Bugs caught: a dump that repeats or drops runs across chunks, runs adopted with their
    old mark (a deleted run looking seen by the first read), names or sizes lost."""
    runs = [api_run(f"p{n % 2}", str(n), IN_PROGRESS if n % 3 else COMPLETED) for n in range(40)]
    store = store_of(runs, max_run_series=3)
    store.begin_pass()
    for record in records(runs, store.rules):
        store.put(record)  # every run carries this pass's generation
    store.end_pass()
    dumped = list(store.dump(chunk=3))
    assert sum(len(items) for _, items in dumped) == 40
    assert len({(project, name) for project, items in dumped for name, _ in items}) == 40
    saved: dict[str, dict[Any, int]] = {}
    for project, items in dumped:
        saved.setdefault(project, {}).update(items)
    again = RunStore(store.rules)
    assert again.adopt(saved, store.strings()) == 40 == len(again)
    snap = again.snapshot(STATUSES, now=NOW, duration=0)
    assert served(snap) == served(store.snapshot(STATUSES, now=NOW, duration=0))
    assert contents(again) == contents(store)
    again.begin_pass()  # the first read after a restart: one run is gone
    for record in records(runs[1:], again.rules):
        again.put(record)
    again.end_pass()
    assert len(again) == 39 and ("p0", "0") not in again


def test_a_save_goes_on_while_a_read_sweeps_a_whole_project() -> None:
    """Bug caught: a dump that fails when a project it listed is gone by the time it gets
    there (a full read swept its last run meanwhile)."""
    store = store_of([api_run("p1", "1"), api_run("p2", "1")])
    chunks = store.dump()
    first = next(chunks)
    store.begin_pass()
    (keep,) = records([api_run(first[0], "1")], store.rules)
    store.put(keep)
    store.end_pass()  # the other project is gone
    assert [project for project, items in chunks if items] == []


def test_the_string_table_holds_each_string_once() -> None:
    """Bug caught: a string looked up under another key (or not kept), so that the table, and
    the store, grow with every read of the same runs."""
    store = store_of([api_run("p1", "1"), api_run("p1", "2")])
    before = len(store.strings())
    for _ in range(3):
        for record in records([api_run("p1", "1"), api_run("p1", "2")], store.rules):
            store.put(record)
    assert len(store.strings()) == before == 4  # creator, status, run type, project name


def test_more_distinct_strings_than_the_store_can_index_fail_the_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bug caught: an index past its bits packed into the next field (a wrong status)."""
    from exporter.collection import store as store_module

    monkeypatch.setattr(store_module, "_MAX_STRINGS", 5)
    store = store_of([api_run("p1", "1", creator="a")])  # four strings
    store_of_into(store, [api_run("p1", "2", creator="b")])  # the fifth
    with pytest.raises(
        InvalidResponseError, match=r"^more distinct names than the store can hold$"
    ):
        store_of_into(store, [api_run("p1", "3", creator="c")])


def store_of_into(store: RunStore, runs: list[dict[str, Any]]) -> None:
    page = decode_page(json.dumps({"runList": runs, "totalCount": len(runs)}).encode())
    store.put_runs(page["runList"])


def test_a_run_marked_as_existing_survives_the_sweep() -> None:
    """Bug caught: a run skipped by paging, whose detail answered, swept all the same."""
    store = store_of([api_run("p1", "1"), api_run("p1", "2"), api_run("p2", "2")])
    (kept,) = [record for record in contents(store) if record.key == ("p1", "2")]
    store.begin_pass()
    store.mark(("p1", "2"))
    stats = store.end_pass()
    assert contents(store) == {kept}  # the run whole, not only its name
    assert stats.removed == 2  # one in each project


def test_the_runs_a_pass_did_not_see_are_listed_up_to_a_limit() -> None:
    """Bugs caught: runs the pass saw listed as unseen (asked for by detail for nothing), or
    a mass deletion's thousands listed (one detail request each)."""
    store = store_of([api_run(f"p{n % 2}", str(n)) for n in range(6)])
    store.begin_pass()
    for record in records([api_run("p0", "0"), api_run("p1", "1")], store.rules):
        store.put(record)
    assert sorted(store.unseen(4) or []) == [("p0", "2"), ("p0", "4"), ("p1", "3"), ("p1", "5")]
    assert store.unseen(3) is None


def test_an_unchanged_run_is_no_new_run_and_counts_once_in_the_pass() -> None:
    """Bugs caught: a run read again reported new (the head read's count), or counted again
    by the pass under way."""
    runs = [api_run("p1", "1"), api_run("p1", "2", IN_PROGRESS)]
    store = store_of(runs)
    (one, _) = records(runs, store.rules)
    assert store.put(one) is False
    page = decode_page(json.dumps({"runList": runs, "totalCount": 2}).encode())["runList"]
    store.begin_pass()
    assert store.put_runs(page) == 0
    assert store.pass_seen() == 2
    assert store.put_runs(page) == 0
    assert store.pass_seen() == 2
    store_of_into(store, [api_run("p1", "3"), api_run("p2", "1")])
    assert store.end_pass().added == 2


def test_a_duration_just_past_a_bound_lands_above_it() -> None:
    """Bug caught: durations bucketed from a rounded or scaled value (60.03 s under le=60)."""
    run = finished_run("1", "2024-09-03T10:00:00.000", "2024-09-03T10:01:00.030")
    (histogram,) = snapshot([run]).durations.values()
    assert histogram.counts == [0, 1, 0]


@pytest.mark.parametrize(
    ("created", "updated"),
    [
        ("9999-12-31 23:59:59", "9999-12-31 23:59:59"),
        ("0001-01-01 00:00:00", "2024-09-03 10:00:00"),
        ("2024-09-03 10:00:00", "9999-12-31 23:59:59"),
        ("0001-01-01T00:00:00+09:00", "2024-09-03 10:00:00"),  # year 0 in UTC
    ],
)
def test_a_time_the_store_cannot_keep_fails_the_read_naming_the_run(
    created: str, updated: str
) -> None:
    """Bug caught: a sentinel date (year 9999), in either field, packed past its bits into
    the next field; or a time at datetime's very ends (before year 1 in UTC) raising
    something else than `InvalidResponseError`."""
    store = RunStore(rules())
    with pytest.raises(InvalidResponseError) as raised:
        store_of_into(store, [api_run("p1", "7", created=created, updateTime=updated)])
    assert str(raised.value).startswith("run 7 of project p1: createTime/updateTime is not")
    assert len(store) == 0


BOUND = 1 << 45  # milliseconds either side of 1970 that a record packs


@pytest.mark.parametrize(
    ("ms", "kept"), [(BOUND - 1, True), (BOUND, False), (-BOUND, True), (-BOUND - 1, False)]
)
@pytest.mark.parametrize("field", ["createTime", "updateTime"])
def test_the_packable_range_is_exact_to_the_millisecond(ms: int, kept: bool, field: str) -> None:
    """Bug caught: `<` for `<=` at either end of the range, in either field."""
    from datetime import datetime, timedelta

    moment = (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).isoformat()
    run = api_run("p1", "7", created="1970-01-01 00:00:00", updateTime="1970-01-01 00:00:00")
    run[field] = moment
    store = RunStore(rules())
    if kept:
        store_of_into(store, [run])
        assert len(store) == 1
    else:
        with pytest.raises(InvalidResponseError):
            store_of_into(store, [run])


def test_a_run_without_a_run_type_is_counted_with_an_empty_one() -> None:
    run = api_run("p1", "1")
    del run["runType"]
    assert served(snapshot([run]))["counts"] == {("p1", "name-p1", COMPLETED, ""): 1}


def test_the_newest_run_of_a_filtered_project_leaves_without_error() -> None:
    """Bug caught: the rescan after a project's newest run leaves, with PROJECTS set."""
    store = store_of(
        [
            api_run("p1", "1", created="2024-09-03 09:00:00"),
            api_run("p1", "2", created="2024-09-03 10:00:00"),
            api_run("p2", "1"),
        ],
        projects=frozenset({"p1"}),
    )
    store.remove(("p1", "2"))
    snap = store.snapshot(STATUSES, now=NOW, duration=0)
    assert snap.last_created == {("p1", "name-p1"): 1725354000.0}
