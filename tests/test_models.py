"""The API's shapes (pydantic): what a body that does not fit is said to lack, without its
values (a body may hold tokens)."""

from __future__ import annotations

import json

import pytest

from exporter.nsml.models import DecodeFailed, decode_page
from tests.helpers.runs import api_run

pytestmark = pytest.mark.unit


def test_a_page_that_does_not_fit_names_its_first_problem_and_where() -> None:
    """Bugs caught: the problem said without where it is (`at runList.1.createTime`), with the
    path joined wrong, another problem than the first, or the body's values in the message."""
    run = api_run("p1", "secret-token-run")
    broken = {k: v for k, v in run.items() if k != "createTime"}
    body = json.dumps({"runList": [run, broken], "totalCount": 2}).encode()
    with pytest.raises(DecodeFailed) as raised:
        decode_page(body)
    assert str(raised.value) == "Field required at runList.1.createTime"
    with pytest.raises(DecodeFailed) as whole:
        decode_page(b"[1, 2]")
    assert "secret-token-run" not in str(raised.value)
    assert " at " not in str(whole.value)  # a problem of the whole body has no place
