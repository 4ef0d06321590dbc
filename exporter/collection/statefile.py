"""`STATE_FILE`: the store of runs saved after each complete full read and at shutdown, so that a
restart serves the last view at once (with its true age) while the next full read reconciles it.

The file is gzipped JSON: a header (`Meta`: when it was saved, the full read it rests on, the
time zone its times were read in) and the store's own compact form (`store.Saved`: the table of
distinct strings, and each project's runs as [name, packed record] pairs). It is written to a
temporary file beside it and renamed over it, so a crash mid-write leaves the last good file. A
file that is missing, unreadable, of another format version, or read in another time zone is
ignored with one line in the log: the exporter then warms up as if it had none. It holds what the
run list says (names, statuses, creators, times), no key or secret.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .store import Name, Saved

log = logging.getLogger(__name__)

FORMAT = "nsml-exporter store"
#: Raised whenever the packed record's layout (store.py) changes.
VERSION = 2


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


def save(path: Path, saved: Saved, meta: Meta) -> None:
    """Write the store to `path` atomically; a failure is logged, never raised."""
    body = {
        "format": FORMAT,
        "version": VERSION,
        "meta": asdict(meta),
        "strings": saved.strings,
        "runs": {
            project: [[name, packed] for name, packed in runs]
            for project, runs in saved.runs.items()
        },
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with (
                os.fdopen(handle, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out,
            ):
                out.write(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        log.warning("could not save the store of runs to %s: %s", path, error.strerror or error)


def load(path: Path, *, timezone: str) -> tuple[Saved, Meta] | None:
    """The saved store and its header, or None (logged) when there is none to use."""
    try:
        with gzip.open(path, "rb") as raw:
            body: Any = json.loads(raw.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as error:
        log.warning("ignoring the saved store %s: not readable (%s)", path, error)
        return None
    try:
        if body.get("format") != FORMAT or body.get("version") != VERSION:
            log.warning("ignoring the saved store %s: another format or version", path)
            return None
        meta = Meta(**body["meta"])
        strings = [str(text) for text in body["strings"]]
        runs: dict[str, list[tuple[Name, int]]] = {
            str(project): [(_name(name), int(packed)) for name, packed in items]
            for project, items in body["runs"].items()
        }
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        log.warning("ignoring the saved store %s: malformed (%s)", path, error)
        return None
    if meta.timezone != timezone:
        log.warning(
            "ignoring the saved store %s: its times were read in %s, not %s",
            path,
            meta.timezone,
            timezone,
        )
        return None
    return Saved(strings, runs), meta


def _name(name: object) -> Name:
    if isinstance(name, bool) or not isinstance(name, int | str):
        raise TypeError("a run name is a string or a number")
    return name
