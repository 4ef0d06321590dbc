"""What /metrics answers, rendered in-process: the shared part of one collection reused by every
scrape of it, each in the encoding that scrape asked for."""

from __future__ import annotations

import gzip

from prometheus_client import CollectorRegistry

from exporter.collection.collector import NsmlCollector
from exporter.selfmetrics import ExporterMetrics
from exporter.web.exposition import Exposition
from exporter.web.negotiation import FORMATS, PLAIN, Choice
from tests.fake_source import FakeSource
from tests.helpers.runs import api_run, run_list
from tests.helpers.settings import make_settings


def exposition(**settings: object) -> tuple[Exposition, FakeSource]:
    runs = run_list([api_run("p1", "1"), api_run("p2", "2")])
    source = FakeSource(lambda deadline: runs)
    values: dict[str, object] = {"details": False, "collection_mode": "scrape"}
    values.update(settings)
    metrics = ExporterMetrics()
    collector = NsmlCollector(make_settings(**values), source, metrics)
    live = CollectorRegistry()
    metrics.register(live)
    return Exposition(collector, live), source


def test_a_plain_scrape_after_a_gzip_one_of_the_same_collection_gets_plain_bytes() -> None:
    """Bug caught (issue 27; a survivor of issue 22 that its process test could not catch,
    every scrape there collecting anew): the shared render keyed by format only, so a plain
    scrape right after a gzip one of the same collection got gzip bytes, or the reverse."""
    shown, source = exposition(min_interval=3600)  # every scrape here: one collection
    zipped = b"".join(shown.render(PLAIN, gzipped=True))
    plain = b"".join(shown.render(PLAIN, gzipped=False))
    again = b"".join(shown.render(PLAIN, gzipped=True))
    assert source.reads == 1  # the same collection, so the shared part was reused
    assert plain.startswith(b"# HELP") and b"nsml_up 1.0" in plain
    assert zipped[:2] == again[:2] == b"\x1f\x8b"
    assert (
        gzip.decompress(zipped).split(b"\n# HELP process_")[0]
        == plain.split(b"\n# HELP process_")[0]
    )


def test_each_format_of_one_collection_is_rendered_for_itself() -> None:
    """Bug caught: the shared part cached for the first format asked and served to every
    other (OpenMetrics bytes to a scraper that asked for text 0.0.4)."""
    shown, source = exposition(min_interval=3600)
    openmetrics = Choice(FORMATS[1], "underscores")
    text = b"".join(shown.render(PLAIN, gzipped=False))
    om = b"".join(shown.render(openmetrics, gzipped=False))
    assert source.reads == 1
    assert om.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")
    assert om.count(b"# EOF") == 1  # the shared part's own EOF removed


def test_a_new_collection_is_rendered_anew_in_every_encoding() -> None:
    """Bugs caught: the render kept for the last collection served for the next one (the
    check of which collection it belongs to inverted), in plain or gzip: a run added since
    never shown."""
    runs = [api_run("p1", "1")]
    source = FakeSource(lambda deadline: run_list(list(runs)))
    metrics = ExporterMetrics()
    settings = make_settings(details=False, collection_mode="scrape")
    collector = NsmlCollector(settings, source, metrics)
    shown = Exposition(collector, CollectorRegistry())
    for gzipped in (False, True):
        first = b"".join(shown.render(PLAIN, gzipped=gzipped))
        runs.append(api_run("p1", str(len(runs) + 1)))
        second = b"".join(shown.render(PLAIN, gzipped=gzipped))
        if gzipped:
            first, second = gzip.decompress(first), gzip.decompress(second)
        labels = 'project="name-p1",project_id="p1",run_type="NOTEBOOK"'
        counted = f'nsml_runs{{{labels},status="RUN_STATE_COMPLETED"}} {len(runs)}.0'.encode()
        assert counted in second, second
        assert counted not in first
    assert source.reads == 4
