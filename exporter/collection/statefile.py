"""`STATE_FILE`: the store of runs saved after each complete full read and at shutdown, so that a
restart serves the last view at once (with its true age) while the next full read reconciles it.

The file is gzipped JSON lines, written and read a chunk at a time so that a million runs never
sit in memory twice: a header (`Meta`: when it was saved, the full read it rests on, the time
zone its times were read in), then lines of `[project_id, [[name, packed record], ...]]` in the
store's own compact form (`store.py`), then the table of strings the records index. It is
written to a temporary file beside it and renamed over it, so a crash mid-write leaves the last
good file. A file that is missing, unreadable, of another format version, or read in another
time zone is ignored with one line in the log: the exporter then warms up as if it had none. It
holds what the run list says (names, statuses, creators, times), no key or secret.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from .store import Name

log = logging.getLogger(__name__)

FORMAT = "nsml-exporter store"
#: Raised whenever the packed record's layout (store.py) or this file's changes.
VERSION = 3


@dataclass(frozen=True, slots=True)
class Meta:
    saved: float
    last_success: float
    view_started: float
    full_read_seconds: float
    total_count: int
    newest_first: bool | None
    pages: int
    mode: str
    timezone: str


@dataclass(frozen=True, slots=True)
class Saved:
    """A saved store: each project's runs (name -> packed record) and the strings they index."""

    runs: dict[str, dict[Name, int]]
    strings: list[str]
    meta: Meta


class Dumped(Protocol):
    """What is saved of the store (`store.RunStore`)."""

    def dump(self) -> Iterator[tuple[str, list[tuple[Name, int]]]]: ...

    def strings(self) -> list[str]: ...


def save(path: Path, store: Dumped, meta: Meta) -> None:
    """Write the store to `path` atomically; a failure is logged, never raised."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with (
                os.fdopen(handle, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out,
            ):
                header = {"format": FORMAT, "version": VERSION, "meta": asdict(meta)}
                out.write(_line(header))
                for project_id, items in store.dump():
                    out.write(_line([project_id, items]))
                # Last: strings only grow, so every index written above is in this table.
                out.write(_line({"strings": store.strings()}))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        log.warning("could not save the store of runs to %s: %s", path, error.strerror or error)


def _line(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def load(path: Path, *, timezone: str) -> Saved | None:
    """The saved store, or None (logged) when there is none to use."""
    try:
        with gzip.open(path, "rb") as lines:
            found = _read(lines, path)
    except FileNotFoundError:
        return None
    except (OSError, EOFError, UnicodeDecodeError) as error:
        log.warning("ignoring the saved store %s: not readable (%s)", path, error)
        return None
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        log.warning("ignoring the saved store %s: malformed (%s)", path, error)
        return None
    if found is None:
        return None
    if found.meta.timezone != timezone:
        log.warning(
            "ignoring the saved store %s: its times were read in %s, not %s",
            path,
            found.meta.timezone,
            timezone,
        )
        return None
    return found


def _read(lines: Any, path: Path) -> Saved | None:
    header = json.loads(next(lines))
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        log.warning("ignoring the saved store %s: another format or version", path)
        return None
    meta = Meta(**header["meta"])
    runs: dict[str, dict[Name, int]] = {}
    strings: list[str] | None = None
    for line in lines:
        value = json.loads(line)
        if isinstance(value, dict):
            strings = [str(text) for text in value["strings"]]
            continue
        project_id, items = value
        into = runs.setdefault(str(project_id), {})
        for name, packed in items:
            into[_name(name)] = int(packed)
    if strings is None:
        raise ValueError("the file ends before its strings (cut short)")
    return Saved(runs, strings, meta)


def _name(name: object) -> Name:
    if isinstance(name, bool) or not isinstance(name, int | str):
        raise TypeError("a run name is a string or a number")
    return name
