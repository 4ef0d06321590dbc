"""Negotiation and header parsing against a simple model, with Hypothesis writing the headers:
element order, weights, whitespace, quoting and case, in every combination."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.web.negotiation import (
    DEFAULT_ESCAPING,
    ESCAPINGS,
    FORMATS,
    MAX_ELEMENTS,
    PLAIN,
    Choice,
    gzip_accepted,
    negotiate,
    parse_elements,
)

RANGES = (
    "*/*",
    "text/*",
    "text/plain",
    "application/*",
    "application/openmetrics-text",
    "application/json",
    "image/png",
)
WEIGHTS = ("0", "0.0", "0.001", "0.1", "0.5", "0.75", "0.999", "1", "1.0", "1.000")


@dataclass(frozen=True)
class Wanted:
    """One element as the model knows it."""

    value: str
    params: tuple[tuple[str, str], ...]
    q: float | None  # None: no q parameter (weight 1)


ows = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def elements(draw: st.DrawFn, values: tuple[str, ...] = RANGES) -> Wanted:
    params: dict[str, str] = {}
    if draw(st.booleans()):
        params["version"] = draw(st.sampled_from(["0.0.4", "1.0.0", "0.0.1", "2.0.0"]))
    if draw(st.booleans()):
        params["escaping"] = draw(st.sampled_from([*ESCAPINGS, "bogus"]))
    if draw(st.booleans()):
        params["charset"] = draw(st.sampled_from(["utf-8", "UTF-8", "iso-8859-1"]))
    weight = draw(st.none() | st.sampled_from(WEIGHTS))
    items = list(params.items()) + ([("q", weight)] if weight is not None else [])
    return Wanted(
        draw(st.sampled_from(values)),
        tuple(draw(st.permutations(items))),
        None if weight is None else float(weight),
    )


@st.composite
def headers(draw: st.DrawFn, values: tuple[str, ...] = RANGES) -> tuple[str, list[Wanted]]:
    """A well-formed header of 1 to 8 elements: random case in names, whitespace around every
    separator, some parameter values quoted."""
    wanted = draw(st.lists(elements(values), min_size=1, max_size=8))
    parts = []
    for element in wanted:
        value = element.value.upper() if draw(st.booleans()) else element.value
        text = value
        for name, raw in element.params:
            shown = f'"{raw}"' if draw(st.booleans()) else raw
            cased = name.upper() if draw(st.booleans()) else name
            text += f"{draw(ows)};{draw(ows)}{cased}={shown}"
        parts.append(text)
    joined = ""
    for index, part in enumerate(parts):
        joined += (f"{draw(ows)},{draw(ows)}" if index else draw(ows)) + part
    return joined + draw(ows), wanted


def weight(element: Wanted) -> float:
    return 1.0 if element.q is None else element.q


@given(headers())
def test_well_formed_elements_are_read_whatever_the_spacing_quoting_and_case(
    header: tuple[str, list[Wanted]],
) -> None:
    """Bugs caught: a quoted value kept with its quotes, a name compared with case, whitespace
    before `;` or `,` taken into a value, an element lost after one with parameters."""
    text, wanted = header
    got = parse_elements(text)
    assert [(e.value, e.params, e.q, e.index) for e in got] == [
        (w.value, {n: v for n, v in w.params if n != "q"}, weight(w), i)
        for i, w in enumerate(wanted)
    ]


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_any_header_parses_without_error_and_within_the_bound(header: str) -> None:
    """Bug caught: an input the parser was not written for raising (a 500 for a scrape), or a
    header of thousands of elements all read."""
    assert len(parse_elements(header)) <= MAX_ELEMENTS
    negotiate(header)
    gzip_accepted(header)


def model_choice(wanted: list[Wanted]) -> Choice | None:
    """What RFC 9110 asks, written plainly: for each format, the most specific element naming
    it (the first of those) gives its weight; the heaviest format above 0 wins, then the one
    named first, then the exporter's order."""

    def specificity(element: Wanted, media_type: str, version: str) -> int | None:
        params = dict(element.params)
        kind, sub = element.value.split("/")
        if params.get("charset", "utf-8").lower() != "utf-8":
            return None
        if element.value == "*/*":
            rank = 0
        elif sub == "*" and media_type.startswith(kind + "/"):
            rank = 1
        elif element.value == media_type:
            rank = 2
        else:
            return None
        if "version" in params:
            return 3 if params["version"] == version else None
        return rank

    best: tuple[tuple[float, int, int], Choice] | None = None
    for rank, fmt in enumerate(FORMATS):
        named = [
            (s, -i, e)
            for i, e in enumerate(wanted)
            if (s := specificity(e, fmt.media_type, fmt.version)) is not None
        ]
        if not named:
            continue
        _, minus_index, element = max(named, key=lambda item: (item[0], item[1]))
        if weight(element) <= 0:
            continue
        escaping = dict(element.params).get("escaping", DEFAULT_ESCAPING)
        if not fmt.escapes or escaping not in ESCAPINGS:
            escaping = DEFAULT_ESCAPING
        if escaping == "values" and fmt.media_type == "application/openmetrics-text":
            escaping = DEFAULT_ESCAPING  # the library's OpenMetrics `values` (see the module)
        key = (-weight(element), -minus_index, rank)
        if best is None or key < best[0]:
            best = (key, Choice(fmt, escaping))
    return None if best is None else best[1]


@given(headers())
@settings(max_examples=300)
def test_the_format_chosen_is_the_models(header: tuple[str, list[Wanted]]) -> None:
    """Bugs caught: the least specific range deciding a format's weight, `q=0` taken as a low
    weight, a tie broken by the exporter's order before the client's, the escaping of one
    element applied to another's format, a charset other than UTF-8 accepted."""
    text, wanted = header
    assert negotiate(text) == model_choice(wanted)


def test_no_accept_header_gets_plain_text() -> None:
    """Bug caught: a scraper that sends no `Accept` (curl, old Prometheus) refused with 406."""
    assert negotiate(None) == negotiate("") == negotiate("*/*") == PLAIN


@given(headers(values=("gzip", "x-gzip", "*", "identity", "br", "deflate")))
@settings(max_examples=500)
@example(("gzip;q=0, *", [Wanted("gzip", (("q", "0"),), 0.0), Wanted("*", (), None)]))
def test_gzip_is_accepted_as_the_model_says(header: tuple[str, list[Wanted]]) -> None:
    """Bugs caught: `gzip;q=0` answered with gzip, `*` outweighing a named `gzip;q=0`,
    `x-gzip` not taken for gzip."""
    text, wanted = header
    named = [weight(w) for w in wanted if w.value in ("gzip", "x-gzip")]
    star = [weight(w) for w in wanted if w.value == "*"]
    expected = max(named) > 0 if named else any(q > 0 for q in star)
    assert gzip_accepted(text) is expected
