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

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..collection.collector import NsmlCollector
from ..collection.snapshot import Snapshot
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


class Exposition:
    def __init__(self, collector: NsmlCollector, live: CollectorRegistry) -> None:
        self._collector = collector
        self._live = live
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        #: For the current snapshot, by format: the shared part, and its gzip stream flushed to
        #: a byte boundary with the compressor to continue it (made on the first gzip scrape).
        self._plain: dict[Choice, bytes] = {}
        self._gzipped: dict[Choice, tuple[bytes, zlib._Compress]] = {}

    def render(self, choice: Choice, gzipped: bool) -> list[bytes]:
        """The answer's body, in pieces to write one after the other."""
        snapshot = self._collector.shared.get()
        # One render per collection and format; scrapes that come meanwhile wait for it.
        with self._lock:
            if snapshot is not self._snapshot:
                self._snapshot, self._plain, self._gzipped = snapshot, {}, {}
            plain = self._plain.get(choice)
            if plain is None:
                plain = choice.encoder(_Families(self._collector.families(snapshot)))
                plain = self._plain[choice] = plain.removesuffix(OPENMETRICS_EOF)
            shared_gzip = self._gzipped.get(choice) if gzipped else None
            if gzipped and shared_gzip is None:
                compressor = zlib.compressobj(1, zlib.DEFLATED, GZIP_WBITS)
                head = compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)
                shared_gzip = self._gzipped[choice] = (head, compressor)
        live = choice.encoder(self._live)  # the live part ends the body (with OpenMetrics' EOF)
        if shared_gzip is None:
            return [plain, live]
        head, compressor = shared_gzip
        tail = compressor.copy()
        return [head, tail.compress(live) + tail.flush()]
