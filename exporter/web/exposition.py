"""What /metrics answers: the run-list families rendered once per collection and format, shared
by every scrape of that collection, then the exporter's own families, live and small.

The run-list part is most of the body (17 MB at 30,000 runs with per-run series): rendering it
again for each scrape cost 1.3 s of CPU, and each slow reader held a copy. Now every scrape of one
collection writes the same bytes object. For gzip, the shared part is compressed once and its
compressor kept; each answer continues a copy of it with the live part, so a scrape gets one
ordinary gzip stream (one member: curl, browsers and Prometheus all read it).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..collector import NsmlCollector
from ..snapshot import Snapshot
from .negotiation import Choice

OPENMETRICS_EOF = b"# EOF\n"
#: zlib's window bits for a gzip header and trailer.
GZIP_WBITS = 16 + zlib.MAX_WBITS


class _Families(Collector):
    """Families already built, in the shape prometheus_client's encoders read."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


@dataclass(frozen=True)
class _Rendered:
    plain: bytes
    #: The gzip stream of `plain`, flushed to a byte boundary, and the compressor to continue it.
    gzipped: bytes
    compressor: zlib._Compress


class Exposition:
    def __init__(self, collector: NsmlCollector, live: CollectorRegistry) -> None:
        self._collector = collector
        self._live = live
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._rendered: dict[Choice, _Rendered] = {}

    def render(self, choice: Choice, gzipped: bool) -> list[bytes]:
        """The answer's body, in pieces to write one after the other."""
        shared = self._shared(choice, self._collector.shared.get())
        live = choice.encoder(self._live)
        if not gzipped:
            return [shared.plain, live]
        tail = shared.compressor.copy()
        return [shared.gzipped, tail.compress(live) + tail.flush()]

    def _shared(self, choice: Choice, snapshot: Snapshot) -> _Rendered:
        # One render per collection and format; scrapes that come meanwhile wait for it.
        with self._lock:
            if snapshot is not self._snapshot:
                self._snapshot, self._rendered = snapshot, {}
            rendered = self._rendered.get(choice)
            if rendered is None:
                plain = choice.encoder(_Families(self._collector.families(snapshot)))
                plain = plain.removesuffix(OPENMETRICS_EOF)  # the live part ends the body
                compressor = zlib.compressobj(1, zlib.DEFLATED, GZIP_WBITS)
                gzipped = compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)
                rendered = self._rendered[choice] = _Rendered(plain, gzipped, compressor)
            return rendered
