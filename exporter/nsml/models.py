"""The NSML API's shapes: run-list, project-list and node-list pages, a run's detail, an error body
(pydantic).

A page is validated straight from the response bytes (`decode_page`): every field's type, that
`totalCount` is not negative, and that `createTime`/`updateTime` are real dates and times
(`YYYY-MM-DD HH:MM:SS` as documented; an ISO `T`, fractions and an offset are accepted). Strict
mode: a number is not taken for a string or a date, nor a string for a number. Unknown fields are
ignored. Runs stay the dicts pydantic-core builds, whose repeated strings (project names,
statuses, creators) it shares between runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, NotRequired, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

_STRICT = ConfigDict(strict=True)
T = TypeVar("T")


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


class Project(TypedDict):
    """One project of `GET /projects`: only the fields the metrics use (every one but the id
    may be missing)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    projectId: str
    projectName: NotRequired[str]
    status: NotRequired[str]
    nodeCount: NotRequired[Annotated[int, Field(ge=0)]]


class ProjectPage(TypedDict):
    """`GET /projects` response body."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    projects: list[Project]
    totalCount: Annotated[int, Field(ge=0)]


class RunDetail(TypedDict):
    """`GET /projects/{projectId}/runs/{runName}`: the GPU server, the image kind and the run's
    status, nothing more. `command`, `envs`, `imagePath` and `note` often hold tokens: they
    are not fields here, so they are never decoded into anything the exporter keeps, logs or
    serves."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    engFullName: NotRequired[str]
    gpuSvrCode: NotRequired[int]
    imageType: NotRequired[str]
    status: NotRequired[str]


class Node(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    state: NotRequired[str]


class NodePage(TypedDict):
    """`GET /projects/{projectId}/runs/{runName}/nodes` response body."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    nodes: list[Node]
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
_PROJECTS = TypeAdapter(ProjectPage)
_DETAIL = TypeAdapter(RunDetail)
_NODES = TypeAdapter(NodePage)
_ERROR = TypeAdapter(ApiErrorBody)


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{first['msg']} at {where}" if where else first["msg"]


def _decode(adapter: TypeAdapter[T], body: bytes) -> T:
    """`body` as `adapter`'s type; raises `DecodeFailed` naming the first problem (never a
    value from the body)."""
    try:
        return adapter.validate_json(body)
    except ValidationError as error:
        raise DecodeFailed(_first_problem(error)) from None


def decode_page(body: bytes) -> RunPage:
    return _decode(_PAGE, body)


def decode_projects(body: bytes) -> ProjectPage:
    return _decode(_PROJECTS, body)


def decode_run_detail(body: bytes) -> RunDetail:
    return _decode(_DETAIL, body)


def decode_nodes(body: bytes) -> NodePage:
    return _decode(_NODES, body)


def decode_error(body: bytes) -> ApiErrorDetail:
    """The API's error body; raises `DecodeFailed` when the body is something else."""
    return _decode(_ERROR, body)["error"]


_EPOCH = datetime(1970, 1, 1)
_AWARE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_OFFSET = timedelta(0)
_MILLISECOND = timedelta(milliseconds=1)


def to_timestamp(moment: datetime, zone: tzinfo) -> float:
    """Unix seconds of an API time, read in `zone` unless it carries an offset.

    The same as `moment.replace(tzinfo=zone).timestamp()`: a wall time repeated at a DST change
    is the earlier one.
    """
    if moment.tzinfo is not None:
        return moment.timestamp()
    return (moment - _EPOCH - (zone.utcoffset(moment) or _NO_OFFSET)).total_seconds()


def to_milliseconds(moment: datetime, zone: tzinfo) -> int:
    """`to_timestamp` in whole milliseconds (rounded down), computed exactly: what the store
    keeps, for every run of every page."""
    if moment.tzinfo is not None:
        return (moment - _AWARE_EPOCH) // _MILLISECOND
    return (moment - _EPOCH - (zone.utcoffset(moment) or _NO_OFFSET)) // _MILLISECOND
