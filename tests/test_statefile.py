"""STATE_FILE: the store saved and loaded, and every file that must be ignored with one line."""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.collection import statefile
from exporter.collection.snapshot import Rules
from exporter.collection.store import RunStore
from exporter.nsml.models import decode_page
from tests.helpers.runs import api_run

META = statefile.Meta(
    saved=1.7e9,
    last_success=1.6e9,
    view_started=1.5e9,
    full_read_seconds=12.5,
    total_count=3,
    newest_first=True,
    pages=2,
    mode="background",
    timezone="Asia/Seoul",
)


def store_of(count: int) -> RunStore:
    rules = Rules(frozenset(), frozenset({"RUN_STATE_IN_PROGRESS"}), 10, ZoneInfo("Asia/Seoul"))
    store = RunStore(rules)
    runs = [api_run(f"p{n % 2}", str(n), creator=f"u{n % 3}") for n in range(count)]
    store.put_runs(
        decode_page(json.dumps({"runList": runs, "totalCount": count}).encode())["runList"]
    )
    return store


def test_a_saved_store_loads_whole_with_its_meta(tmp_path: Path) -> None:
    """Bugs caught: runs lost across chunks, the string table written before strings that
    later records index, the meta not round-tripping, a temporary file left behind."""
    path = tmp_path / "store.json.gz"
    store = store_of(25_003)  # more than two chunks of 10,000
    statefile.save(path, store, META)
    assert [p.name for p in tmp_path.iterdir()] == ["store.json.gz"]
    saved = statefile.load(path, timezone="Asia/Seoul")
    assert saved is not None
    assert saved.meta == META
    assert saved.strings == store.strings()
    assert sum(len(runs) for runs in saved.runs.values()) == 25_003
    assert saved.runs == {project: dict(items) for project, items in _by_project(store).items()}


def _by_project(store: RunStore) -> dict[str, list[tuple[Any, int]]]:
    found: dict[str, list[tuple[Any, int]]] = {}
    for project, items in store.dump():
        found.setdefault(project, []).extend(items)
    return found


def test_no_file_is_no_store_and_no_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert statefile.load(tmp_path / "none.json.gz", timezone="UTC") is None
    assert not caplog.records


def write(path: Path, lines: list[object]) -> None:
    with gzip.open(path, "wt") as out:
        for line in lines:
            out.write(json.dumps(line) + "\n")


HEADER = {"format": statefile.FORMAT, "version": statefile.VERSION, "meta": asdict(META)}


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        ([{**HEADER, "version": statefile.VERSION - 1}], "another format or version"),
        ([{**HEADER, "format": "something else"}], "another format or version"),
        ([HEADER, ["p1", [["1", 5]]]], "malformed (the file ends before its strings"),
        ([HEADER, ["p1", [[True, 5]]], {"strings": []}], "malformed (a run name is"),
        ([{**HEADER, "meta": {"saved": 1}}], "malformed"),
        ([HEADER, ["p1", [["1", "many"]]], {"strings": []}], "malformed"),
    ],
)
def test_a_file_it_cannot_use_is_ignored_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lines: list[object], said: str
) -> None:
    """Bugs caught: an old or foreign file read as this version's, a file cut short (before
    its strings) loaded half, a name that is no name taken."""
    path = tmp_path / "store.json.gz"
    write(path, lines)
    with caplog.at_level(logging.WARNING):
        assert statefile.load(path, timezone="Asia/Seoul") is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"ignoring the saved store {path}: ") and said in line


def test_a_file_read_in_another_zone_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug caught: times read in Asia/Seoul served as if read in UTC after TIMEZONE changed."""
    path = tmp_path / "store.json.gz"
    statefile.save(path, store_of(3), META)
    assert statefile.load(path, timezone="UTC") is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == f"ignoring the saved store {path}: its times were read in Asia/Seoul, not UTC"


@pytest.mark.parametrize(
    ("content", "said"),
    [(b"not gzip at all", "not readable ("), (gzip.compress(b"{not json"), "malformed (")],
)
def test_an_unreadable_file_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, said: str
) -> None:
    path = tmp_path / "store.json.gz"
    path.write_bytes(content)
    assert statefile.load(path, timezone="Asia/Seoul") is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"ignoring the saved store {path}: {said}")
    assert not line.endswith("(None)")


def test_a_save_that_fails_midway_leaves_the_last_file_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bugs caught: a failed save raising into the reader (its thread would end), leaving a
    half-written file in place of the last good one, or its temporary file behind."""
    path = tmp_path / "store.json.gz"
    statefile.save(path, store_of(3), META)
    good = path.read_bytes()

    class DiskFull:
        def dump(self) -> Any:
            yield "p1", [(1, 5)]
            raise OSError(28, "No space left on device")

        def strings(self) -> list[str]:
            return []

    statefile.save(path, DiskFull(), META)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["store.json.gz"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == f"could not save the store of runs to {path}: No space left on device"
