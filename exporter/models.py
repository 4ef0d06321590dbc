"""The NSML API's shapes: a page of the run list, a run, an error body.

Pages are validated straight from the response bytes in one call (pydantic-core parses and checks
the JSON together). Times are turned into Unix seconds during validation, in the zone passed as
validation context (`TIMEZONE`): the API sends `YYYY-MM-DD HH:MM:SS` with no offset.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo


def _parse_time(value: Any, info: ValidationInfo) -> float:
    if not isinstance(value, str):
        raise ValueError("must be a string YYYY-MM-DD HH:MM:SS")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not a date and time (expected YYYY-MM-DD HH:MM:SS)") from None
    if moment.tzinfo is None:
        zone: tzinfo | None = info.context.get("tz") if info.context else None
        if zone is None:
            raise ValueError("no timezone given to interpret a naive time")
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


#: `createTime`/`updateTime`: a string on the wire, Unix seconds once validated.
NsmlTime = Annotated[float, BeforeValidator(_parse_time)]


class Run(BaseModel):
    """One run. Identity is (`projectId`, `runName`): run names repeat across projects."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    run_name: str = Field(alias="runName")
    # Documented in the example only; its absence should not blind the whole exporter.
    run_type: str = Field(alias="runType", default="")
    project_id: str = Field(alias="projectId")
    project_name: str = Field(alias="projectName")
    status: str
    creator: str
    create_time: NsmlTime = Field(alias="createTime")
    update_time: NsmlTime = Field(alias="updateTime")


class RunPage(BaseModel):
    """`GET /projects/runs` response body."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    run_list: list[Run] = Field(alias="runList")
    total_count: int = Field(alias="totalCount", ge=0)


class ApiErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error_code: str | int = Field(alias="errorCode")
    message: str = ""
    details: str | None = None


class ApiErrorBody(BaseModel):
    """`{"error": {"errorCode": "200", "message": "...", "details": "..."}}`."""

    model_config = ConfigDict(extra="ignore")

    error: ApiErrorDetail
