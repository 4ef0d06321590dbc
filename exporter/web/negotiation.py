"""Which exposition format, name escaping and content coding a scrape gets.

`Accept` is read as RFC 9110 (section 12.5.1) says: a weight per media range, `q=0` meaning "not
this", the most specific range deciding a format's weight, parameter values quoted or not. The
best-weighted format the exporter serves wins; on equal weight the range the client lists first,
then the exporter's own order (plain text 0.0.4 first, what every scraper reads). The bodies come
from prometheus_client's encoders. Its own `choose_encoder` ignores weights, answers `*/*` and
OpenMetrics 0.0.1 with text and knows no `q=0`, so the choice is made here.

Escaping (Prometheus 3's `escaping=` parameter, on the 1.0.0 formats only): `allow-utf-8`,
`underscores`, `dots` or `values`; absent or unknown means `underscores`, as the Prometheus
libraries do. The `Content-Type` answered always names the escaping actually applied. Under
`dots` the family's name is escaped and the sample's suffix appended as it is
(`nsml__run__duration__seconds_bucket`), as prometheus/common does: prometheus_client escapes
the whole sample name, which its own OpenMetrics parser then refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from prometheus_client import exposition as text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

ESCAPINGS = ("allow-utf-8", "underscores", "dots", "values")
DEFAULT_ESCAPING = "underscores"

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_VALUE = re.compile(rf"\s*({_TCHARS}(?:/{_TCHARS})?)")
# RFC 9110 section 5.6.6: parameters = *( OWS ";" OWS [ parameter ] ): a `;` may stand alone.
_PARAM = re.compile(rf"\s*;\s*(?:({_TCHARS})\s*=\s*({_TCHARS}|{_QUOTED}))?")
# The rest of an element; past an unbalanced quote, the rest of the header.
_NEXT = re.compile(rf"\s*(?:,|$)|(?:{_QUOTED}|[^,\"])*(?:,|$)|.*", re.DOTALL)
#: Elements read of one header: Prometheus sends five; more is no client's need.
MAX_ELEMENTS = 64
_WEIGHT = re.compile(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")


@dataclass(frozen=True)
class Element:
    """One element of a comma-separated header: a value with its parameters and weight."""

    value: str  # lower case: "text/plain", "*/*", "gzip"
    params: dict[str, str]  # names lower case, values unquoted
    q: float
    index: int  # its place in the header


def parse_elements(header: str) -> list[Element]:
    """The well-formed elements among the first `MAX_ELEMENTS` of an `Accept` or
    `Accept-Encoding` header; a malformed one (no value, a parameter without `=`, a weight that
    is no weight, an unbalanced quote: then the rest of the header) is passed over."""
    elements: list[Element] = []
    pos = 0
    for _ in range(MAX_ELEMENTS):
        if pos >= len(header):
            break
        start = pos
        value = _VALUE.match(header, pos)
        params: dict[str, str] = {}
        good = value is not None
        if value is not None:
            pos = value.end()
            while param := _PARAM.match(header, pos):
                pos = param.end()
                if param[1] is None:
                    continue  # an empty parameter
                name, raw = param[1].lower(), param[2]
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                params.setdefault(name, raw)
        tail = _NEXT.match(header, pos)
        assert tail is not None  # the last branch matches anything
        good = good and tail.group().strip() in ("", ",")
        pos = max(tail.end(), start + 1)
        if not good or value is None:
            continue
        weight = params.pop("q", "1")
        if not _WEIGHT.fullmatch(weight):
            continue
        elements.append(Element(value[1].lower(), params, float(weight), len(elements)))
    return elements


@dataclass(frozen=True)
class Format:
    media_type: str
    version: str
    #: Takes an `escaping` parameter (the 1.0.0 formats); the older ones are legacy names only.
    escapes: bool


#: What /metrics serves, in the exporter's order of preference on equal weight. Each media
#: type's first entry is what that type without a version means.
FORMATS = (
    Format("text/plain", "0.0.4", escapes=False),
    Format("application/openmetrics-text", "1.0.0", escapes=True),
    Format("text/plain", "1.0.0", escapes=True),
    # Prometheus reads 0.0.1 with the same parser as 1.0.0, and client_golang serves it the 1.0.0
    # text: so does this exporter.
    Format("application/openmetrics-text", "0.0.1", escapes=False),
)


@dataclass(frozen=True)
class Choice:
    format: Format
    escaping: str

    @property
    def content_type(self) -> str:
        base = f"{self.format.media_type}; version={self.format.version}; charset=utf-8"
        return f"{base}; escaping={self.escaping}" if self.format.escapes else base

    @property
    def encoder(self) -> Callable[[Collector], bytes]:
        # Names are escaped here under `dots`; legacy names pass `underscores` unchanged.
        escaping = DEFAULT_ESCAPING if self.escaping == "dots" else self.escaping
        if self.format.media_type == "text/plain":
            encode = partial(text.generate_latest, escaping=escaping)
        else:
            encode = partial(openmetrics.generate_latest, escaping=escaping, version="1.0.0")
        if self.escaping == "dots":
            return lambda registry: encode(DotsEscaped(registry))
        return encode


def _dots(name: str) -> str:
    """A legacy name under `dots` (every name here is one: no `.`, nothing else to escape)."""
    return name.replace("_", "__")


class DotsEscaped(Collector):
    """`registry`'s families with family and label names escaped under `dots`, each sample's
    suffix (`_bucket`, `_total`, `_gcount`, ...) kept as it is."""

    def __init__(self, registry: Collector) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            name = _dots(family.name)
            escaped = Metric(name, family.documentation, family.type)
            escaped.unit = family.unit
            escaped.samples = [
                sample._replace(
                    name=name + sample.name[len(family.name) :],
                    labels={_dots(key): value for key, value in sample.labels.items()},
                )
                for sample in family.samples
            ]
            yield escaped


#: What `Accept: */*` (or none) gets.
PLAIN = Choice(FORMATS[0], DEFAULT_ESCAPING)


def _specificity(element: Element, fmt: Format) -> int | None:
    """How specifically `element` names `fmt` (higher wins), or None when it does not."""
    kind, _, sub = element.value.partition("/")
    fmt_kind, _, fmt_sub = fmt.media_type.partition("/")
    if (kind, sub) == ("*", "*"):
        rank = 0
    elif (kind, sub) == (fmt_kind, "*"):
        rank = 1
    elif (kind, sub) == (fmt_kind, fmt_sub):
        rank = 2
    else:
        return None
    charset = element.params.get("charset")
    if charset is not None and charset.lower() != "utf-8":
        return None
    version = element.params.get("version")
    if version is not None:
        return 3 if version == fmt.version else None
    return rank


def _escaping(element: Element, fmt: Format) -> str:
    if not fmt.escapes:
        return DEFAULT_ESCAPING
    asked = element.params.get("escaping", DEFAULT_ESCAPING)
    if asked not in ESCAPINGS:
        return DEFAULT_ESCAPING
    if asked == "values" and fmt.media_type == "application/openmetrics-text":
        # prometheus_client's OpenMetrics encoder writes sample names as U__... under `values`
        # (prometheus/client_python#1177). For names that are valid legacy names, as all of
        # this exporter's are, `values` and `underscores` are the same bytes: serve and name
        # the scheme the library encodes right.
        return DEFAULT_ESCAPING
    return asked


def negotiate(accept: str | None) -> Choice | None:
    """The format for an `Accept` header, or None when the client takes none the exporter
    serves (answer 406). A header that is absent, or has no well-formed element, means `*/*`."""
    elements = parse_elements(accept or "") or parse_elements("*/*")
    candidates = []
    for rank, fmt in enumerate(FORMATS):
        matches = [(s, e) for e in elements if (s := _specificity(e, fmt)) is not None]
        if not matches:
            continue
        element = max(matches, key=lambda match: match[0])[1]  # the first of the most specific
        if element.q > 0:
            score = (-element.q, element.index, rank)
            candidates.append((score, Choice(fmt, _escaping(element, fmt))))
    return min(candidates, key=lambda candidate: candidate[0])[1] if candidates else None


def gzip_accepted(accept_encoding: str | None) -> bool:
    """True when `Accept-Encoding` gives gzip a weight above 0 (`gzip`, `x-gzip` or `*`)."""
    elements = parse_elements(accept_encoding or "")
    named = [e for e in elements if e.value in ("gzip", "x-gzip")]
    if named:
        return max(e.q for e in named) > 0
    return any(e.value == "*" and e.q > 0 for e in elements)
