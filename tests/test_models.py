"""The API's shapes (pydantic): what a body that does not fit is said to lack, without its
values (a body may hold tokens)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from exporter.nsml.models import DecodeFailed, decode_page, to_milliseconds, to_timestamp
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


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 1, 9, 0, 0), 1767225600.0),  # 09:00 in Seoul (UTC+9): 00:00 UTC
        (datetime(2026, 1, 1, 9, 0, 0, 500000), 1767225600.5),
        (datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC), 1767225600.0),  # its own offset
        (datetime(2026, 1, 1, 3, 0, 0, tzinfo=timezone(timedelta(hours=3))), 1767225600.0),
    ],
)
def test_an_api_time_is_read_in_the_zone_unless_it_has_an_offset(
    moment: datetime, expected: float
) -> None:
    """Bugs caught: a naive API time read as UTC, its zone's offset added instead of taken
    away, or a time with its own offset read in the zone (every age and duration off by
    nine hours in Seoul)."""
    seoul = ZoneInfo("Asia/Seoul")
    assert to_timestamp(moment, seoul) == expected
    assert to_milliseconds(moment, seoul) == int(expected * 1000)
    assert to_timestamp(moment, seoul) == moment.replace(tzinfo=moment.tzinfo or seoul).timestamp()


def test_a_zone_without_an_offset_reads_as_utc() -> None:
    """Bug caught: a zone whose `utcoffset` is None (a bare `tzinfo`) failing the read."""

    class NoOffset(tzinfo):
        def utcoffset(self, moment: datetime | None) -> timedelta | None:
            return None

    assert to_timestamp(datetime(2026, 1, 1), NoOffset()) == 1767225600.0
