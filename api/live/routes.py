"""Live feeds: Server-Sent Events at ``/live`` and a WebSocket at ``/live/ws``.

Both start with a snapshot (the newest reading of every matching device), then stream changes,
conflated per device for a client that reads slowly, with heartbeats and a maximum lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Final

import orjson
from fastapi import APIRouter, Depends, Header, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

from api import sse
from api.auth import live_principal, websocket_principal
from api.dependencies import KeyCheckerDep, LiveDep, MaybeLiveDep, SettingsDep
from api.errors import http_headers, http_status
from api.live import metrics
from api.live.hub import LiveHub, Subscriber
from api.live.schemas import LiveFilter, LiveReading
from api.responses import AUTH, INVALID
from core import timestamps
from core.config import LiveSettings
from core.errors import AppError, Unavailable
from devices.contract import District, Kind, utc_now

router = APIRouter(
    prefix="/api/v1",
    tags=["live"],
    responses={**INVALID, **AUTH},
)

WS_GOING_AWAY: Final = 1001
WS_POLICY_VIOLATION: Final = 1008

KindsQuery = Annotated[list[Kind] | None, Query(alias="kind", description="repeatable")]
DistrictsQuery = Annotated[list[District] | None, Query(alias="district", description="repeatable")]
DevicesQuery = Annotated[
    list[str] | None,
    Query(alias="device", description="repeatable, or comma-separated device ids"),
]


def _filter(
    kinds: list[Kind] | None, districts: list[District] | None, devices: list[str] | None
) -> LiveFilter:
    ids = {part.strip() for item in devices or [] for part in item.split(",") if part.strip()}
    return LiveFilter(frozenset(kinds or ()), frozenset(districts or ()), frozenset(ids))


def _subscribe(
    hub: LiveHub, settings: LiveSettings, live_filter: LiveFilter, last_event_id: str | None
) -> tuple[Subscriber, list[LiveReading], int]:
    """Register the client and take its snapshot in one step (no await between), so nothing
    published in between is lost or sent twice."""
    if hub.clients >= settings.max_clients:
        raise Unavailable("too many live clients on this replica", code="live_full")
    subscriber = hub.subscribe(live_filter)
    snapshot = hub.snapshot(live_filter, hub.resume_point(last_event_id))
    return subscriber, snapshot, hub.last_seq


def _snapshot_json(items: list[LiveReading]) -> bytes:
    return b'{"items":[' + b",".join(item.data for item in items) + b"]}"


async def _sse_stream(
    hub: LiveHub,
    settings: LiveSettings,
    live_filter: LiveFilter,
    last_event_id: str | None,
) -> AsyncIterator[bytes]:
    subscriber, snapshot, seq = _subscribe(hub, settings, live_filter, last_event_id)
    metrics.CLIENTS.labels("sse").inc()
    try:
        yield sse.retry(settings.reconnect_ms)
        yield sse.event("snapshot", _snapshot_json(snapshot), hub.event_id(seq))
        deadline = time.monotonic() + settings.max_connection_s
        while (remaining := deadline - time.monotonic()) > 0:
            if await subscriber.wait(min(settings.heartbeat_s, remaining)):
                yield b"".join(
                    sse.event("reading", item.data, hub.event_id(item.seq))
                    for item in subscriber.take()
                )
            elif time.monotonic() < deadline:
                yield sse.event("heartbeat", timestamps.dumps({"ts": utc_now()}))
        hint = orjson.dumps({"after_ms": settings.reconnect_ms})
        yield sse.retry(settings.reconnect_ms) + sse.event("reconnect", hint)
    finally:
        hub.unsubscribe(subscriber)
        metrics.CLIENTS.labels("sse").dec()


@router.get(
    "/live",
    dependencies=[Depends(live_principal)],
    response_class=StreamingResponse,
    responses=sse.OPENAPI,
)
async def live_sse(
    *,
    live: LiveDep,
    settings: SettingsDep,
    kinds: KindsQuery = None,
    districts: DistrictsQuery = None,
    devices: DevicesQuery = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    resume_from: Annotated[
        str | None, Query(alias="last_event_id", description="as the Last-Event-ID header")
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``snapshot``, then ``reading`` events (newest per device), a
    ``heartbeat`` when idle, and ``reconnect`` at the end of the connection's lifetime."""
    stream = _sse_stream(
        live.hub, settings.live, _filter(kinds, districts, devices), last_event_id or resume_from
    )
    return sse.response(stream)


def _ws_message(kind: str, event_id: str | None, body: bytes, key: bytes = b"data") -> str:
    head = b'{"type":"' + kind.encode() + b'"'
    if event_id is not None:
        head += b',"id":"' + event_id.encode() + b'"'
    return (head + b',"' + key + b'":' + body + b"}").decode()


async def _ws_send(
    *,
    websocket: WebSocket,
    hub: LiveHub,
    settings: LiveSettings,
    subscriber: Subscriber,
    snapshot: list[LiveReading],
    seq: int,
) -> None:
    items = b"[" + b",".join(item.data for item in snapshot) + b"]"
    await websocket.send_text(_ws_message("snapshot", hub.event_id(seq), items, b"items"))
    deadline = time.monotonic() + settings.max_connection_s
    while (remaining := deadline - time.monotonic()) > 0:
        if await subscriber.wait(min(settings.heartbeat_s, remaining)):
            for item in subscriber.take():
                await websocket.send_text(_ws_message("reading", hub.event_id(item.seq), item.data))
        elif time.monotonic() < deadline:
            await websocket.send_text(_ws_message("heartbeat", None, timestamps.dumps(utc_now())))
    hint = orjson.dumps(settings.reconnect_ms)
    await websocket.send_text(_ws_message("reconnect", None, hint, b"after_ms"))
    await websocket.close(WS_GOING_AWAY, "maximum connection lifetime; reconnect")


async def _ws_drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a close is noticed at once."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


async def _deny(websocket: WebSocket, exc: AppError) -> None:
    """Refuse the handshake with the HTTP status and error body when the server can send one
    (uvicorn can); otherwise close with "policy violation"."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = {"error": exc.code, "detail": exc.detail}
        await websocket.send_denial_response(
            JSONResponse(body, status_code=http_status(exc), headers=http_headers(exc))
        )
    else:
        await websocket.close(WS_POLICY_VIOLATION, exc.code)


@router.websocket("/live/ws")
async def live_ws(
    *,
    websocket: WebSocket,
    checker: KeyCheckerDep,
    live: MaybeLiveDep,
    settings: SettingsDep,
    kinds: KindsQuery = None,
    districts: DistrictsQuery = None,
    devices: DevicesQuery = None,
    last_event_id: Annotated[str | None, Query()] = None,
) -> None:
    """WebSocket: JSON messages ``{"type": "snapshot" | "reading" | "heartbeat" | "reconnect"}``."""
    try:
        await websocket_principal(websocket, checker)
    except AppError as exc:
        await _deny(websocket, exc)
        return
    if live is None:
        await websocket.close(1013, "live feeds are disabled on this replica")
        return
    live_filter = _filter(kinds, districts, devices)
    await websocket.accept()
    try:
        subscriber, snapshot, seq = _subscribe(live.hub, settings.live, live_filter, last_event_id)
    except Unavailable:
        await websocket.close(1013, "too many live clients; retry later")
        return
    sender = asyncio.create_task(
        _ws_send(
            websocket=websocket,
            hub=live.hub,
            settings=settings.live,
            subscriber=subscriber,
            snapshot=snapshot,
            seq=seq,
        )
    )
    drainer = asyncio.create_task(_ws_drain(websocket))
    metrics.CLIENTS.labels("websocket").inc()
    try:
        await asyncio.wait({sender, drainer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        live.hub.unsubscribe(subscriber)
        metrics.CLIENTS.labels("websocket").dec()
        for task in (sender, drainer):
            task.cancel()
        for task in (sender, drainer):
            with contextlib.suppress(
                asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError
            ):
                await task
