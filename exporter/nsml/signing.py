"""NCP API Gateway signature v2: signing a request, and checking one as the gateway does.

message = METHOD + " " + URI + "\\n" + timestamp + "\\n" + accessKey, where URI is the path with
the base path and the query string exactly as sent; the signature is
base64(HMAC-SHA256(secret, message)). The gateway accepts a timestamp within 5 minutes of its own
clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def signature(secret_key: str, method: str, uri: str, timestamp_ms: str, access_key: str) -> str:
    message = f"{method} {uri}\n{timestamp_ms}\n{access_key}"
    digest = hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_headers(
    secret_key: str, access_key: str, method: str, uri: str, timestamp_ms: int
) -> dict[str, str]:
    stamp = str(timestamp_ms)
    return {
        "x-ncp-apigw-timestamp": stamp,
        "x-ncp-iam-access-key": access_key,
        "x-ncp-apigw-signature-v2": signature(secret_key, method, uri, stamp, access_key),
    }


TIMESTAMP_WINDOW_MS = 5 * 60 * 1000


def gateway_check(
    headers: Any,
    method: str,
    uri: str,
    *,
    access_key: str,
    secret_key: str,
    api_key: str | None,
    now: float,
) -> tuple[int, str] | None:
    """None when the gateway would let the request through, else (HTTP status, details)."""
    stamp = headers.get("x-ncp-apigw-timestamp", "")
    access = headers.get("x-ncp-iam-access-key", "")
    given = headers.get("x-ncp-apigw-signature-v2", "")
    if not (stamp and access and given):
        return 401, "missing authentication headers"
    if not stamp.isdigit() or abs(int(stamp) - now * 1000) > TIMESTAMP_WINDOW_MS:
        return 401, "timestamp is out of the allowed window (5 minutes)"
    if not hmac.compare_digest(access, access_key):
        return 401, "unknown access key"
    if not hmac.compare_digest(given, signature(secret_key, method, uri, stamp, access)):
        return 401, "signature mismatch"
    if api_key is not None and not hmac.compare_digest(
        headers.get("x-ncp-apigw-api-key", ""), api_key
    ):
        return 401, "invalid API key"
    return None
