"""Logging: plain text for people, one JSON object per line for machines.

A message can carry text from outside (an API error body, a request line). In the text format
every control character of the message is written as an escape (`\\n`, `\\x1b`), so nothing
from outside can start a line of its own or drive a terminal; a traceback keeps its lines. In
JSON the same characters are `\\u` escapes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

#: C0 controls, DEL, C1 controls and the Unicode line and paragraph separators: each a line
#: break to some reader (`str.splitlines` breaks at NEL, \x85, and at U+2028).
_BREAKING = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
_CONTROLS = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _BREAKING}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
#: JSON escapes C0 controls itself; the others, as `\\u` escapes inside its strings.
_JSON_CONTROLS = {c: f"\\u{c:04x}" for c in _BREAKING if c >= 0x7F}


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROLS)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_CONTROLS)


def setup_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
