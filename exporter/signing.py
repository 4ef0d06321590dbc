"""NCP API Gateway signature v2.

message = METHOD + " " + URI + "\\n" + timestamp + "\\n" + accessKey, where URI is the path with
the base path and the query string exactly as sent; the signature is
base64(HMAC-SHA256(secret, message)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


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
