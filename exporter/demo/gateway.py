"""What the NCP API Gateway does on its own: error bodies as its docs list them, page caps."""

from __future__ import annotations

import json

#: HTTP status -> (errorCode, message), as the NCP gateway documents them.
ERRORS: dict[int, tuple[str | int, str]] = {
    400: (100, "Bad Request Exception"),
    401: ("200", "Authentication Failed"),
    403: ("230", "Forbidden"),
    404: (300, "Not Found Exception"),
    413: (430, "Request Entity Too Large"),
    429: ("420", "Rate Limited"),
    500: (900, "Unexpected Error"),
    503: (500, "Endpoint Error"),
    504: (510, "Endpoint Timeout"),
}


def error_body(status: int, details: str) -> bytes:
    """`{"error": {"errorCode": ..., "message": ..., "details": ...}}` for `status`."""
    code, message = ERRORS.get(status, (900, "Unexpected Error"))
    return json.dumps(
        {"error": {"errorCode": code, "message": message, "details": details}}
    ).encode()


def served_page_size(asked: int, cap: int | None, refuse: bool) -> int | None:
    """Items a page of `asked` holds behind a gateway capping at `cap`: capped silently, or
    None when it refuses a larger `pageSize` (400)."""
    if cap is None or asked <= cap:
        return asked
    return None if refuse else cap
