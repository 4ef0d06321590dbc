"""The NSML API's shapes: a page of the run list, a run, an error body.

A page is validated straight from the response bytes in one call: pydantic-core parses and checks
the JSON together against the TypedDicts below (plain dicts come out: about half the cost of
model instances, which matters at 100 pages a scrape). Each run is then reduced to a `RunRecord`,
a tuple of the eight strings the metrics need. `createTime`/`updateTime` are checked for their
shape during validation and turned into Unix seconds (`to_timestamp`, in `TIMEZONE`) only for
runs that get per-run series.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from operator import itemgetter
from typing import Annotated, NamedTuple, NotRequired

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from typing_extensions import TypedDict

#: `YYYY-MM-DD HH:MM:SS` as documented; an ISO `T`, fractions and an offset are tolerated.
NsmlTime = Annotated[
    str,
    StringConstraints(
        pattern=r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$"
    ),
]


class Run(TypedDict):
    """One run as the API sends it. Identity is (`projectId`, `runName`)."""

    runName: str
    # Documented in the example only; its absence should not blind the whole exporter.
    runType: NotRequired[str]
    projectId: str
    projectName: str
    status: str
    creator: str
    createTime: NsmlTime
    updateTime: NsmlTime


class RunPage(TypedDict):
    """`GET /projects/runs` response body. Unknown extra fields are ignored."""

    runList: list[Run]
    totalCount: Annotated[int, Field(ge=0)]


#: Validates a page from JSON bytes: `RUN_PAGE.validate_json(body)`.
RUN_PAGE: TypeAdapter[RunPage] = TypeAdapter(RunPage)


class RunRecord(NamedTuple):
    """What the exporter keeps of a run."""

    project_id: str
    project_name: str
    run_name: str
    run_type: str
    status: str
    creator: str
    create_time: str
    update_time: str

    @classmethod
    def of(cls, run: Run) -> RunRecord:
        return cls(
            run["projectId"],
            run["projectName"],
            run["runName"],
            run.get("runType", ""),
            run["status"],
            run["creator"],
            run["createTime"],
            run["updateTime"],
        )


_FIELDS = itemgetter(
    *(
        "projectId",
        "projectName",
        "runName",
        "runType",
        "status",
        "creator",
        "createTime",
        "updateTime",
    )
)


def records_of(runs: list[Run]) -> list[RunRecord]:
    """`RunRecord.of` for a whole page, at half its cost (this runs 10,000 times a scrape)."""
    new = tuple.__new__
    try:
        return [new(RunRecord, _FIELDS(run)) for run in runs]
    except KeyError:  # a run without the optional runType
        return [RunRecord.of(run) for run in runs]


class ApiErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error_code: str | int = Field(alias="errorCode")
    message: str = ""
    details: str | None = None


class ApiErrorBody(BaseModel):
    """`{"error": {"errorCode": "200", "message": "...", "details": "..."}}`."""

    model_config = ConfigDict(extra="ignore")

    error: ApiErrorDetail


_HOURS: dict[tuple[tzinfo, str], float] = {}
_HOURS_LIMIT = 100_000


def _exact(text: str, zone: tzinfo) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def to_timestamp(text: str, zone: tzinfo) -> float:
    """Unix seconds of an API time, read in `zone` unless it carries an offset.

    The start of each hour is computed once (zoneinfo is slow) and minutes and seconds added;
    an hour whose offset changes inside it (a DST edge) is always computed in full.
    Raises ValueError for a time that does not exist in the calendar.
    """
    if len(text) != 19:
        return _exact(text, zone)
    key = (zone, text[:13])
    start = _HOURS.get(key)
    if start is None:
        first = datetime.fromisoformat(text[:13] + ":00:00").replace(tzinfo=zone)
        last = datetime.fromisoformat(text[:13] + ":59:59").replace(tzinfo=zone)
        if first.utcoffset() != last.utcoffset():
            return _exact(text, zone)
        if len(_HOURS) >= _HOURS_LIMIT:
            _HOURS.clear()
        start = _HOURS[key] = first.timestamp()
    minutes, seconds = int(text[14:16]), int(text[17:19])
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} is not a valid time")
    return start + minutes * 60 + seconds
