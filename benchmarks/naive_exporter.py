"""The baseline: an NSML exporter written the way most people would write one.

Sequential pages, a new connection per page (`requests.get`, no session), a pydantic model per
run, `strptime` per timestamp, and a fresh registry of labelled gauges filled on every scrape.
It is correct for a well-behaved API; it exists only to be measured against.

    python benchmarks/naive_exporter.py PORT BASE_URL ACCESS_KEY SECRET_KEY
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel

KST = ZoneInfo("Asia/Seoul")


class Run(BaseModel):
    runName: str
    runType: str
    projectId: str
    projectName: str
    status: str
    creator: str
    createTime: str
    updateTime: str


def fetch_runs(base_url: str, access_key: str, secret_key: str) -> tuple[list[Run], int]:
    path = urlsplit(base_url).path
    runs: list[Run] = []
    page = 1
    while True:
        uri = f"{path}/projects/runs?page={page}&pageSize=100"
        stamp = str(int(time.time() * 1000))
        message = f"GET {uri}\n{stamp}\n{access_key}"
        signature = base64.b64encode(
            hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).digest()
        ).decode()
        response = requests.get(
            base_url.removesuffix(path) + uri,
            headers={
                "x-ncp-apigw-timestamp": stamp,
                "x-ncp-iam-access-key": access_key,
                "x-ncp-apigw-signature-v2": signature,
            },
            timeout=5,
        )
        response.raise_for_status()
        data = response.json()
        for item in data["runList"]:
            runs.append(Run(**item))
        if not data["runList"] or len(runs) >= data["totalCount"]:
            return runs, data["totalCount"]
        page += 1


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST).timestamp()


def render(base_url: str, access_key: str, secret_key: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    up = Gauge("nsml_up", "API readable", registry=registry)
    count = Gauge(
        "nsml_runs", "runs", ["project_id", "project", "status", "run_type"], registry=registry
    )
    labels = ["project_id", "project", "run", "run_type", "status", "creator"]
    age = Gauge("nsml_run_age_seconds", "age", labels, registry=registry)
    created = Gauge("nsml_run_created_timestamp_seconds", "created", labels, registry=registry)
    updated = Gauge("nsml_run_updated_timestamp_seconds", "updated", labels, registry=registry)
    total = Gauge("nsml_api_reported_runs", "totalCount", registry=registry)
    try:
        runs, total_count = fetch_runs(base_url, access_key, secret_key)
    except Exception:
        up.set(0)
        return registry
    up.set(1)
    total.set(total_count)
    for run in runs:
        count.labels(run.projectId, run.projectName, run.status, run.runType).inc()
        if run.status == "RUN_STATE_IN_PROGRESS":
            values = [
                run.projectId,
                run.projectName,
                run.runName,
                run.runType,
                run.status,
                run.creator,
            ]
            start = parse_time(run.createTime)
            age.labels(*values).set(time.time() - start)
            created.labels(*values).set(start)
            updated.labels(*values).set(parse_time(run.updateTime))
    return registry


def main() -> None:
    port, base_url, access_key, secret_key = sys.argv[1:5]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                body, content_type = b"ok\n", "text/plain"
            else:
                registry = render(base_url, access_key, secret_key)
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(registry)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
