"""Request framing over real sockets (RFC 9112): one answer per request, nothing smuggled behind a
duplicated framing header, malformed header lines refused, HEAD without a body."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.process import ExporterProcess, raw, start_exporter, status_lines

SMUGGLED = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    exporter = start_exporter(tmp_path_factory.mktemp("framing"), ["--demo"])
    yield exporter
    exporter.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Issue 16: the first Content-Length read, the second ignored, the body answered.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
        # Issue 16: an empty Transfer-Encoding read as none, the chunked one ignored.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLED,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED,
        # Issue 17: a length that is no number was taken for no body.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n" + SMUGGLED,
    ],
    ids=["two-lengths", "empty-then-chunked", "chunked", "a-body", "length-abc"],
)
@pytest.mark.process
def test_a_body_or_doubled_framing_gets_one_400_and_nothing_smuggled(
    served: ExporterProcess, request_bytes: bytes
) -> None:
    answer = raw(served, request_bytes)
    assert status_lines(answer) == ["HTTP/1.1 400 Bad Request"], answer[:300]
    assert b"nsml_up" not in answer
    assert served.get().status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # RFC 9112 2.2: an empty line before the request line SHOULD be ignored.
        (b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "200"),
        (b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "200"),
        # RFC 9112 5.1: whitespace between a field name and the colon MUST get 400.
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nAccept : text/plain\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon at all\r\n\r\n", "400"),
        # RFC 9112 5.2: obsolete line folding is refused.
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n  folded\r\n\r\n", "400"),
        # No "100 Continue" for a body that will be refused: one status line, 400.
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5"
            b"\r\n\r\n",
            "400",
        ),
        # Expect without a body: answered as any request.
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n",
            "200",
        ),
    ],
    ids=[
        "crlf-first",
        "two-crlf-first",
        "space-before-colon",
        "no-colon",
        "obs-fold",
        "expect-with-body",
        "expect-without-body",
    ],
)
@pytest.mark.process
def test_lenient_parsing_follows_rfc_9112(
    served: ExporterProcess, request_bytes: bytes, status: str
) -> None:
    answer = raw(served, request_bytes, wait=3)
    lines = status_lines(answer)
    assert len(lines) == 1, answer[:300]
    assert lines[0].split(" ")[1] == status, answer[:300]
    assert b"100 Continue" not in answer


@pytest.mark.process
def test_head_answers_the_length_of_the_body_and_no_body(served: ExporterProcess) -> None:
    """Bug caught: HEAD writing the body too (the next request on the connection would read it
    as a response)."""
    answer = raw(served, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.startswith(b"Content-Length")
    )
    assert length > 100
    assert rest == b""


@pytest.mark.process
def test_head_then_get_on_one_connection_each_get_their_answer(served: ExporterProcess) -> None:
    answer = raw(
        served,
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert status_lines(answer) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    assert answer.endswith(b"\r\n\r\nok\n")
    assert answer.count(b"ok\n") == 1
