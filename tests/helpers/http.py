"""HTTP for tests: raw bytes over a socket, and an adapter for requests that answers from a
function without a network and records the calls."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

PageHandler = Callable[[int, int], tuple[int, Any]]


@dataclass
class Call:
    uri: str
    headers: dict[str, str]

    @property
    def page(self) -> int:
        return int(parse_qs(urlsplit(self.uri).query)["page"][0])


class FakeAdapter(HTTPAdapter):
    """A requests transport adapter that answers `GET .../projects/runs` from a function.

    The function gets (page, pageSize) and returns (status, body); bodies are JSON-encoded unless
    they are bytes. A `TimeoutError` it raises becomes requests' `ReadTimeout`. Every request is
    recorded, headers included.
    """

    def __init__(self, handler: PageHandler) -> None:
        super().__init__()
        self.handler = handler
        self.calls: list[Call] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        self.calls.append(Call(f"{parts.path}?{parts.query}", dict(request.headers)))
        query = parse_qs(parts.query)
        try:
            status, body = self.handler(int(query["page"][0]), int(query["pageSize"][0]))
        except TimeoutError as error:
            raise requests.exceptions.ReadTimeout(str(error), request=request) from None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = urllib3.HTTPResponse(
            body=io.BytesIO(raw),
            headers={"Content-Type": "application/json", "Content-Length": str(len(raw))},
            status=status,
            preload_content=False,
        )
        return self.build_response(request, answer)

    @property
    def pages(self) -> list[int]:
        return [call.page for call in self.calls]


def exchange(address: tuple[str, int], data: bytes, wait: float = 5.0) -> bytes:
    """Send `data` on a new connection to `address`, then read until the server closes it (or
    `wait` passes with nothing more)."""
    with socket.create_connection(address, timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)
