"""The NSML API's shapes: a page of the run list, a run, an error body (pydantic).

A page is validated straight from the response bytes (`decode_page`): every field's type, that
`totalCount` is not negative, and that `createTime`/`updateTime` are real dates and times
(`YYYY-MM-DD HH:MM:SS` as documented; an ISO `T`, fractions and an offset are accepted). Strict
mode: a number is not taken for a string or a date, nor a string for a number. Unknown fields are
ignored. Runs stay the dicts pydantic-core builds, whose repeated strings (project names,
statuses, creators) it shares between runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Annotated, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

_STRICT = ConfigDict(strict=True)


class Run(TypedDict):
    """One run, as the API sends it. Identity is (`projectId`, `runName`)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    projectId: str
    projectName: str
    runName: str
    status: str
    creator: str
    createTime: datetime
    updateTime: datetime
    # In the docs' example only, not in the field table: its absence should not blind the
    # whole exporter.
    runType: NotRequired[str]


class RunPage(TypedDict):
    """`GET /projects/runs` response body."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    runList: list[Run]
    totalCount: Annotated[int, Field(ge=0)]


class ApiErrorDetail(TypedDict):
    errorCode: str | int
    message: NotRequired[str]
    details: NotRequired[str | None]


class ApiErrorBody(TypedDict):
    """`{"error": {"errorCode": "200", "message": "...", "details": "..."}}`."""

    error: ApiErrorDetail


class DecodeFailed(ValueError):
    """A body that is not JSON, or not of the expected shape; the message is one line."""


_PAGE = TypeAdapter(RunPage)
_ERROR = TypeAdapter(ApiErrorBody)


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{first['msg']} at {where}" if where else first["msg"]


def decode_page(body: bytes) -> RunPage:
    """A run-list page from its JSON bytes; raises `DecodeFailed` naming the first problem."""
    try:
        return _PAGE.validate_json(body)
    except ValidationError as error:
        raise DecodeFailed(_first_problem(error)) from None


def decode_error(body: bytes) -> ApiErrorDetail:
    """The API's error body; raises `DecodeFailed` when the body is something else."""
    try:
        return _ERROR.validate_json(body)["error"]
    except ValidationError as error:
        raise DecodeFailed(_first_problem(error)) from None


_EPOCH = datetime(1970, 1, 1)
_NO_OFFSET = timedelta(0)


def to_timestamp(moment: datetime, zone: tzinfo) -> float:
    """Unix seconds of an API time, read in `zone` unless it carries an offset.

    The same as `moment.replace(tzinfo=zone).timestamp()`: a wall time repeated at a DST change
    is the earlier one.
    """
    if moment.tzinfo is not None:
        return moment.timestamp()
    return (moment - _EPOCH - (zone.utcoffset(moment) or _NO_OFFSET)).total_seconds()
