"""Signature v2 against the worked example in the NSML reference, and the headers sent."""

from __future__ import annotations

import base64

from exporter.nsml.client import NsmlClient
from exporter.nsml.signing import signature, signed_headers
from tests.helpers.http import FakeAdapter
from tests.helpers.runs import fetch_runs
from tests.helpers.settings import ACCESS, SECRET, load_fixture, make_settings


def test_signature_matches_the_reference_worked_example() -> None:
    assert (
        signature(
            "SK-example-secret",
            "GET",
            "/nsml/v1/projects/runs?page=1&pageSize=100",
            "1725327501000",
            "AK-example-access",
        )
        == "Wp+OxNLITJ3Wecp2MseBasoYH5M5sjTcsrKM2iwlth0="
    )


def test_signature_covers_the_query_string_exactly_as_sent() -> None:
    a = signature("s", "GET", "/nsml/v1/projects/runs?page=1&pageSize=100", "1", "a")
    b = signature("s", "GET", "/nsml/v1/projects/runs?pageSize=100&page=1", "1", "a")
    assert a != b
    assert len(base64.b64decode(a)) == 32


def test_signed_headers_carry_timestamp_key_and_signature() -> None:
    headers = signed_headers(
        "SK-example-secret",
        "AK-example-access",
        "GET",
        "/nsml/v1/projects/runs?page=1&pageSize=100",
        1725327501000,
    )
    assert headers == {
        "x-ncp-apigw-timestamp": "1725327501000",
        "x-ncp-iam-access-key": "AK-example-access",
        "x-ncp-apigw-signature-v2": "Wp+OxNLITJ3Wecp2MseBasoYH5M5sjTcsrKM2iwlth0=",
    }


def test_client_signs_the_uri_it_requests_including_base_path_and_api_key() -> None:
    api = FakeAdapter(lambda page, size: (200, load_fixture("docs_example_page.json")))
    settings = make_settings(base_url="https://gw.example/nsml/v1", api_key="gw-key", page_size=50)
    client = NsmlClient(settings, adapter=api)
    fetch_runs(client, deadline=1e18)
    request = api.calls[0]
    assert request.uri == "/nsml/v1/projects/runs?page=1&pageSize=50"
    stamp = request.headers["x-ncp-apigw-timestamp"]
    assert request.headers["x-ncp-iam-access-key"] == ACCESS
    assert request.headers["x-ncp-apigw-signature-v2"] == signature(
        SECRET, "GET", "/nsml/v1/projects/runs?page=1&pageSize=50", stamp, ACCESS
    )
    assert request.headers["x-ncp-apigw-api-key"] == "gw-key"
    assert request.headers["Content-Type"] == "application/json"  # as the docs example sends
    # Nothing but the documented headers and the usual HTTP ones goes out.
    assert not {name.lower() for name in request.headers} - {
        "x-ncp-apigw-timestamp",
        "x-ncp-iam-access-key",
        "x-ncp-apigw-signature-v2",
        "x-ncp-apigw-api-key",
        "content-type",
        "accept",
        "accept-encoding",
        "user-agent",
        "connection",
    }


def test_no_api_key_header_when_none_is_set() -> None:
    api = FakeAdapter(lambda page, size: (200, load_fixture("docs_example_page.json")))
    fetch_runs(NsmlClient(make_settings(), adapter=api), deadline=1e18)
    assert "x-ncp-apigw-api-key" not in api.calls[0].headers


def test_the_simulated_gateway_refuses_as_the_reference_says() -> None:
    """The simulator's gateway (`gateway_check`) is what every test's signing is checked
    against. Bugs caught: a missing header taken for a present one (then refused for another
    reason, or let through), the timestamp window off (5 minutes either way), the access key
    or API key not checked, or a signature for another request accepted."""
    from http.client import HTTPMessage

    from exporter.nsml.signing import gateway_check

    uri, now = "/nsml/v1/projects/runs?page=1&pageSize=10", 1_700_000_000.0

    def check(headers: dict[str, str], api_key: str | None = None, at: float = now) -> object:
        message = HTTPMessage()  # as http.server gives it: names without case
        for name, value in headers.items():
            message[name] = value
        return gateway_check(
            message, "GET", uri, access_key=ACCESS, secret_key=SECRET, api_key=api_key, now=at
        )

    good = signed_headers(SECRET, ACCESS, "GET", uri, int(now * 1000))
    assert check(good) is None
    for name in good:
        rest = {k: v for k, v in good.items() if k != name}
        assert check(rest) == (401, "missing authentication headers")
    window = (401, "timestamp is out of the allowed window (5 minutes)")
    assert check(good, at=now + 300) is None and check(good, at=now - 300) is None
    assert check(good, at=now + 300.002) == window and check(good, at=now - 300.002) == window
    assert check({**good, "x-ncp-iam-access-key": "someone-else"}) == (401, "unknown access key")
    other = signed_headers(SECRET, ACCESS, "GET", uri + "0", int(now * 1000))
    assert check(other) == (401, "signature mismatch")
    assert check(good, api_key="k") == (401, "invalid API key")
    assert check({**good, "x-ncp-apigw-api-key": "k"}, api_key="k") is None
