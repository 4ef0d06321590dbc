"""Content negotiation: the format, escaping and coding each scraper gets, as a table, then the
same headers over real HTTP against the exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge

from exporter.web.negotiation import gzip_accepted, negotiate, parse_elements
from tests.helpers.process import ExporterProcess, raw

OM1 = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping="
OM001 = "application/openmetrics-text; version=0.0.1; charset=utf-8"
TEXT1 = "text/plain; version=1.0.0; charset=utf-8; escaping="
TEXT004 = "text/plain; version=0.0.4; charset=utf-8"

#: The headers Prometheus sends, built as its scrape loop builds them (scrape.go acceptHeader):
#: each protocol with a falling weight, `escaping=` on the 1.0.0 formats only, then `*/*`.
PROTOCOLS = {
    "PrometheusProto": "application/vnd.google.protobuf;"
    "proto=io.prometheus.client.MetricFamily;encoding=delimited",
    "PrometheusText0.0.4": "text/plain;version=0.0.4",
    "PrometheusText1.0.0": "text/plain;version=1.0.0",
    "OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
    "OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0",
}


def prometheus3_accept(protocols: list[str], escaping: str = "allow-utf-8") -> str:
    weight = len(PROTOCOLS) + 1
    parts = []
    for protocol in protocols:
        value = PROTOCOLS[protocol]
        if protocol.endswith("1.0.0"):
            value += f";escaping={escaping}"
        parts.append(f"{value};q=0.{weight}")
        weight -= 1
    return ",".join([*parts, f"*/*;q=0.{weight}"])


PROMETHEUS3_DEFAULT = prometheus3_accept(
    ["OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4"]
)
PROMETHEUS2_DEFAULT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

TABLE: list[tuple[str, str | None, str | None]] = [
    # (what, Accept, Content-Type answered or None for 406)
    (
        "Prometheus 3 default, exactly as issue 15 quotes it",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OM1 + "allow-utf-8",
    ),
    ("Prometheus 3 default, built", PROMETHEUS3_DEFAULT, OM1 + "allow-utf-8"),
    ("Prometheus 2.42 default", PROMETHEUS2_DEFAULT, OM1 + "underscores"),
    *[
        (f"Prometheus 3 default, escaping {e}", prometheus3_accept(["OpenMetricsText1.0.0"], e), t)
        for e, t in [
            ("underscores", OM1 + "underscores"),
            ("dots", OM1 + "dots"),
            # prometheus_client's OpenMetrics encoder gets `values` wrong: the same bytes as
            # underscores for legacy names, and the Content-Type says so.
            ("values", OM1 + "underscores"),
        ]
    ],
    (
        "only OpenMetricsText1.0.0",
        prometheus3_accept(["OpenMetricsText1.0.0"]),
        OM1 + "allow-utf-8",
    ),
    ("only OpenMetricsText0.0.1", prometheus3_accept(["OpenMetricsText0.0.1"]), OM001),
    (
        "only PrometheusText1.0.0",
        prometheus3_accept(["PrometheusText1.0.0"]),
        TEXT1 + "allow-utf-8",
    ),
    ("only PrometheusText0.0.4", prometheus3_accept(["PrometheusText0.0.4"]), TEXT004),
    ("only PrometheusProto: its */*", prometheus3_accept(["PrometheusProto"]), TEXT004),
    (
        "text 1.0.0 under values: prometheus_client's text encoder gets it right",
        prometheus3_accept(["PrometheusText1.0.0"], "values"),
        TEXT1 + "values",
    ),
    ("text 1.0.0 under dots", prometheus3_accept(["PrometheusText1.0.0"], "dots"), TEXT1 + "dots"),
    (
        "quoted parameter values",
        'text/plain;version="1.0.0";escaping="dots"',
        TEXT1 + "dots",
    ),
    ("spaces around ; and case", "Text/Plain ; Version=1.0.0 ; Q=0.9", TEXT1 + "underscores"),
    (
        "unknown escaping means underscores",
        "text/plain;version=1.0.0;escaping=bogus",
        TEXT1 + "underscores",
    ),
    ("*/* alone", "*/*", TEXT004),
    ("no Accept at all", None, TEXT004),
    ("an Accept with nothing well-formed is disregarded", ";;,", TEXT004),
    ("text/plain without a version is 0.0.4", "text/plain", TEXT004),
    ("OpenMetrics without a version is 1.0.0", "application/openmetrics-text", OM1 + "underscores"),
    ("application/*", "application/*", OM1 + "underscores"),
    ("q=0 refuses OpenMetrics", "application/openmetrics-text;q=0,*/*;q=0.1", TEXT004),
    (
        "q=0 on a wildcard, a type still taken",
        "text/plain;version=1.0.0,*/*;q=0",
        TEXT1 + "underscores",
    ),
    (
        "the most specific range decides: text/plain refused, its 1.0.0 wanted",
        "text/plain;q=0,text/plain;version=1.0.0;q=0.5",
        TEXT1 + "underscores",
    ),
    ("text/plain refused: OpenMetrics through */*", "text/plain;q=0,*/*", OM1 + "underscores"),
    (
        "the heavier weight wins over header order",
        "text/plain;q=0.2,application/openmetrics-text;q=0.3",
        OM1 + "underscores",
    ),
    (
        "equal weights: the client's first",
        "application/openmetrics-text,text/plain",
        OM1 + "underscores",
    ),
    (
        "q=1.000 is the top weight",
        "text/plain;q=0.999,application/openmetrics-text;q=1.000",
        OM1 + "underscores",
    ),
    ("a weight over 1 is malformed", "application/openmetrics-text;q=2,text/plain;q=0.5", TEXT004),
    # Issue 22, item 12: a `;` with no parameter, alone or before one.
    ("empty parameters", "application/openmetrics-text;;version=1.0.0;", OM1 + "underscores"),
    # Issue 22's survivor: the charset compared case-sensitively (UTF-8 refused with 406).
    ("the charset's case does not matter", "text/plain;charset=UTF-8", TEXT004),
    (
        "another charset is not ours",
        "text/plain;charset=iso-8859-1,application/openmetrics-text;q=0.1",
        OM1 + "underscores",
    ),
    ("*/* refused", "*/*;q=0", None),
    ("an unknown type alone", "application/json", None),
    ("an unknown version alone", "text/plain;version=9.9", None),
    ("OpenMetrics 2.0.0 is not served", "application/openmetrics-text;version=2.0.0", None),
    ("an unknown type, then */*", "application/json,*/*;q=0.01", TEXT004),
]


@pytest.mark.parametrize(("accept", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_negotiation_table(accept: str | None, expected: str | None) -> None:
    choice = negotiate(accept)
    assert (choice.content_type if choice else None) == expected


def test_parameters_are_read_as_rfc_9110_writes_them() -> None:
    elements = parse_elements('a/b;x="q,\\"z";q=0.5, c/d;Y=1, bad;;, e/f;q=2, g/h;n')
    assert [(e.value, e.params, e.q) for e in elements] == [
        ("a/b", {"x": 'q,"z'}, 0.5),  # a comma inside quotes does not split the header
        ("c/d", {"y": "1"}, 1.0),
        ("bad", {}, 1.0),  # RFC 9110 5.6.6: `;` with no parameter is allowed (issue 22, 12)
    ]


def registry_with_one_gauge() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("nsml_up", "doc", ["project_id"], registry=registry).labels("p1").set(1)
    return registry


@pytest.mark.parametrize(
    ("escaping", "name", "label"),
    [
        ("allow-utf-8", "nsml_up", "project_id"),
        ("underscores", "nsml_up", "project_id"),
        ("values", "nsml_up", "project_id"),  # legacy names stay as they are
        ("dots", "nsml__up", "project__id"),  # dots escapes every underscore
    ],
)
@pytest.mark.parametrize("family", ["OpenMetricsText1.0.0", "PrometheusText1.0.0"])
def test_every_escaping_names_samples_as_prometheus_stores_them(
    family: str, escaping: str, name: str, label: str
) -> None:
    choice = negotiate(prometheus3_accept([family], escaping))
    assert choice is not None
    body = choice.encoder(registry_with_one_gauge()).decode()
    samples = [line for line in body.splitlines() if line and not line.startswith("#")]
    assert samples == [f'{name}{{{label}="p1"}} 1.0'], body
    assert f"# TYPE {name} gauge" in body


@pytest.mark.parametrize("family", ["OpenMetricsText1.0.0", "PrometheusText1.0.0"])
def test_dots_escapes_the_family_name_and_keeps_each_suffix(family: str) -> None:
    """Bug caught (issue 22, item 3): the whole sample name escaped under `dots`
    (`nsml__run__duration__seconds__bucket`), which prometheus_client's own OpenMetrics parser
    refuses ("Clashing name") and promtool lints as families without help."""
    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import GaugeHistogramMetricFamily
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    Histogram("nsml_api_request_duration_seconds", "d", registry=registry).observe(0.2)
    Counter("nsml_api_requests", "d", ["endpoint"], registry=registry).labels("runs").inc()

    class Finished:
        def collect(self) -> list[GaugeHistogramMetricFamily]:
            family = GaugeHistogramMetricFamily(
                "nsml_run_duration_seconds", "d", labels=["run_type"]
            )
            family.add_metric(["TRAIN"], [("60.0", 1), ("+Inf", 2)], 90.0)
            return [family]

    registry.register(Finished())  # type: ignore[arg-type]
    choice = negotiate(prometheus3_accept([family], "dots"))
    assert choice is not None and choice.content_type.endswith("escaping=dots")
    body = choice.encoder(registry).decode()
    names = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line[:1] != "#"}
    assert {
        "nsml__api__request__duration__seconds_bucket",
        "nsml__api__request__duration__seconds_count",
        "nsml__api__requests_total",
        "nsml__run__duration__seconds_bucket",
    } <= names
    assert 'endpoint="runs"' in body and "run__type" in body
    if family.startswith("OpenMetrics"):
        parsed = {f.name: f.type for f in text_string_to_metric_families(body)}
        assert parsed["nsml__run__duration__seconds"] == "gaugehistogram"
        assert parsed["nsml__api__requests"] == "counter"


@pytest.mark.parametrize(
    ("accept_encoding", "gzip"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),  # named beats the wildcard
        ("*;q=0", False),
        ("notgzip", False),
        ("identity", False),
        ("", False),
        (None, False),
    ],
)
def test_gzip_only_when_its_weight_is_above_zero(accept_encoding: str | None, gzip: bool) -> None:
    assert gzip_accepted(accept_encoding) is gzip


# -- over real HTTP --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    from tests.helpers.process import start_exporter

    exporter = start_exporter(tmp_path_factory.mktemp("negotiation"), ["--demo"])
    yield exporter
    exporter.stop()


HTTP_CASES = [t for t in TABLE if t[1] is not None]


@pytest.mark.process
@pytest.mark.parametrize(
    ("accept", "expected"), [t[1:] for t in HTTP_CASES], ids=[t[0] for t in HTTP_CASES]
)
def test_each_accept_header_gets_its_content_type_over_http(
    demo: ExporterProcess, accept: str, expected: str | None
) -> None:
    response = demo.get(headers={"Accept": accept, "Accept-Encoding": "identity"})
    assert response.headers["Vary"] == "Accept, Accept-Encoding"
    if expected is None:
        assert response.status_code == 406
        assert b"text/plain; version=0.0.4" in response.content  # says what is served
        return
    assert response.status_code == 200, response.text[:200]
    assert response.headers["Content-Type"] == expected
    assert "Content-Encoding" not in response.headers
    assert "nsml_up" in response.text or "nsml__up" in response.text
    is_openmetrics = expected.startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n") is is_openmetrics
    assert response.text.count("# EOF") == int(is_openmetrics)  # the shared part has none


@pytest.mark.process
def test_accept_split_over_two_header_lines_is_read_whole(demo: ExporterProcess) -> None:
    """RFC 9110: a list header sent as two field lines is one list."""
    answer = raw(
        demo,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Accept: application/json\r\nAccept: text/plain;version=1.0.0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert f"Content-Type: {TEXT1}underscores".encode() in answer


@pytest.mark.parametrize(
    ("coding", "gzipped"), [("gzip", True), ("gzip;q=0", False), ("notgzip", False)]
)
@pytest.mark.process
def test_gzip_over_http_follows_the_weights(
    demo: ExporterProcess, coding: str, gzipped: bool
) -> None:
    response = demo.get(headers={"Accept-Encoding": coding})
    assert (response.headers.get("Content-Encoding") == "gzip") is gzipped
    assert "nsml_up" in response.text  # requests decodes gzip: either way the text is whole


def test_only_the_first_64_elements_are_read() -> None:
    """The README's bound: a header of a thousand elements costs 64. Bug caught: the bound
    off by one, or gone."""
    from exporter.web.negotiation import MAX_ELEMENTS

    assert MAX_ELEMENTS == 64
    junk = ["application/x-junk"] * (MAX_ELEMENTS - 1)
    assert negotiate(", ".join([*junk, "text/plain"])) is not None  # the 64th is read
    assert negotiate(", ".join([*junk, "application/x-junk", "text/plain"])) is None


@pytest.mark.parametrize(
    ("accept", "served"),
    [
        # the more specific range decides: text/* at 0.1 beats */* at 0.9 for text/plain
        ("text/*;q=0.1, */*;q=0.9", "application/openmetrics-text 1.0.0"),
        ("*/*;q=0.9, text/*;q=0.1", "application/openmetrics-text 1.0.0"),
        # an exact type beats its type/*: text/plain refused although text/* is welcome
        ("text/plain;q=0, text/*;q=0.5", None),
        ("text/*;q=0.5, text/plain;q=0", None),
        # an exact type with a version beats the same type without
        ("text/plain;version=0.0.4;q=0, text/plain;q=0.5", "text/plain 1.0.0"),
        ("text/plain;q=0.5, text/plain;version=0.0.4;q=0", "text/plain 1.0.0"),
    ],
)
def test_the_most_specific_range_sets_a_formats_weight(accept: str, served: str | None) -> None:
    """Bugs caught: the ranks of RFC 9110's ranges (`*/*` < `type/*` < `type/sub` < with
    parameters) merged or swapped, so a broader range's weight wins over a narrower one."""
    choice = negotiate(accept)
    assert (f"{choice.format.media_type} {choice.format.version}" if choice else None) == served


def test_an_empty_parameter_is_passed_over_not_the_rest() -> None:
    """Bug caught (RFC 9110 section 5.6.6 allows `;` alone): the parameters after an empty
    one left unread, so `text/plain;;version=1.0.0` was dropped as malformed."""
    choice = negotiate("text/plain;;version=1.0.0")
    assert choice is not None
    assert (choice.format.media_type, choice.format.version) == ("text/plain", "1.0.0")


def test_a_malformed_element_is_passed_over_not_the_rest() -> None:
    """Bugs caught: the elements after a malformed one (no value, or a weight that is no
    weight) left unread."""
    assert [e.value for e in parse_elements("a b, text/plain, x;q=2, gzip")] == [
        "text/plain",
        "gzip",
    ]
