"""Prometheus metrics of the API, and the middleware that records them per route template."""

from __future__ import annotations

import re
import time
import uuid
from typing import Final

import structlog
from prometheus_client import Counter, Gauge, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS: Final = Counter(
    "alatau_api_requests_total", "HTTP requests served", ["method", "route", "status"]
)
REQUEST_SECONDS: Final = Histogram(
    "alatau_api_request_seconds",
    "time to serve an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
READ_REPLICA_UP: Final = Gauge(
    "alatau_api_read_replica_up", "1 when DATABASE_READ_URL's replica answered the last check"
)
READ_REPLICA_LAG: Final = Gauge(
    "alatau_api_read_replica_lag_seconds",
    "how far the read replica's replay is behind (0: all it received is replayed)",
)

REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Requests that match no route share one label, so scanners cannot blow up the label set.
UNMATCHED: Final = "unmatched"


class RequestMetricsMiddleware:
    """Counts and times each request by route template (``/devices/{device_id}``, not the id),
    and binds a correlation id to the logs of the request, echoed as ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        started = time.perf_counter()
        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            # The router records the matched route in the scope it was handed.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if _REQUEST_ID_RE.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex
