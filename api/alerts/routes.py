"""HTTP routes of alerts: rules, alerts, acknowledgement and the live alert feed (SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Final

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from alerts import service
from alerts.schemas import (
    Alert,
    AlertList,
    AlertState,
    Rule,
    RuleCreate,
    RuleList,
    RulePatch,
)
from alerts.service import AlertClient, AlertFeed
from api.auth import Admin, Operator, live_principal, require
from api.dependencies import PoolDep
from api.errors import ServiceUnavailable
from api.keys.schemas import Role
from api.responses import AUTH, INVALID, conflict, not_found
from api.schemas import ErrorBody
from devices.contract import utc_now

# Reading needs any key; rule changes need an admin and acknowledging an operator.
router = APIRouter(
    prefix="/api/v1",
    tags=["alerts"],
    responses={**INVALID, **AUTH},
    dependencies=[require(Role.READER)],
)
# Browsers' EventSource cannot send headers: the feed also takes ?access_token=.
feeds = APIRouter(prefix="/api/v1", tags=["alerts"], responses={**INVALID, **AUTH})

# bigserial ids: anything outside bigint cannot exist, and asyncpg cannot even send it.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_NOT_FOUND: Final = not_found("rule or alert")
SSE_MEDIA_TYPE: Final = "text/event-stream"


@router.get("/alert-rules")
async def list_rules(pool: PoolDep) -> RuleList:
    """Every rule, seeded defaults included."""
    return await service.list_rules(pool)


@router.post(
    "/alert-rules", status_code=status.HTTP_201_CREATED, responses={409: {"model": ErrorBody}}
)
async def create_rule(pool: PoolDep, body: RuleCreate, caller: Admin) -> Rule:
    """Add a rule: a metric above/below a threshold for ``window_s``, or a device offline."""
    return await service.create_rule(pool, body)


@router.patch("/alert-rules/{rule_id}", responses={**_NOT_FOUND, **conflict("the name is taken")})
async def update_rule(pool: PoolDep, rule_id: RowId, patch: RulePatch, caller: Admin) -> Rule:
    """Tune a rule's name, threshold, window, severity or enabled flag."""
    return await service.update_rule(pool, rule_id, patch)


@router.delete("/alert-rules/{rule_id}", status_code=204, responses=_NOT_FOUND)
async def delete_rule(pool: PoolDep, rule_id: RowId, caller: Admin) -> None:
    """Delete a rule with its alerts; disable it instead to keep the history."""
    await service.delete_rule(pool, rule_id)


async def _alert_stream(
    feed: AlertFeed, client: AlertClient, snapshot: AlertList, heartbeat_s: float
) -> AsyncIterator[bytes]:
    try:
        yield b"event: snapshot\ndata: " + snapshot.model_dump_json().encode() + b"\n\n"
        while True:
            if await _wait(client, heartbeat_s):
                yield b"".join(b"event: alert\ndata: " + data + b"\n\n" for data in client.take())
            else:
                yield b"event: heartbeat\ndata: " + orjson.dumps({"ts": utc_now()}) + b"\n\n"
    finally:
        feed.unsubscribe(client)


async def _wait(client: AlertClient, timeout_s: float) -> bool:
    if client.pending:
        return True
    try:
        await asyncio.wait_for(client.ready.wait(), timeout_s)
    except TimeoutError:
        return False
    return True


@feeds.get(
    "/alerts/live",
    dependencies=[Depends(live_principal)],
    response_class=StreamingResponse,
    responses={200: {"content": {SSE_MEDIA_TYPE: {}}, "description": "an event stream"}},
)
async def alerts_live(request: Request, pool: PoolDep) -> StreamingResponse:
    """Server-Sent Events: ``snapshot`` of the unresolved alerts, then an ``alert`` event for
    every change (opened, acknowledged, resolved) made by any replica."""
    feed: AlertFeed | None = getattr(request.app.state, "alert_feed", None)
    if feed is None:
        raise ServiceUnavailable("the alert feed is disabled", code="alerts_disabled")
    client = feed.subscribe()
    try:
        snapshot = await service.list_alerts(
            pool, [AlertState.OPEN, AlertState.ACKNOWLEDGED], None, 1000
        )
    except BaseException:
        feed.unsubscribe(client)
        raise
    heartbeat_s: float = request.app.state.settings.live.heartbeat_s
    return StreamingResponse(
        _alert_stream(feed, client, snapshot, heartbeat_s),
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/alerts")
async def list_alerts(
    pool: PoolDep,
    state: Annotated[list[AlertState] | None, Query(description="repeatable")] = None,
    device_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Alerts, newest first."""
    return await service.list_alerts(pool, state, device_id, limit)


@router.get("/alerts/{alert_id}", responses=_NOT_FOUND)
async def get_alert(pool: PoolDep, alert_id: RowId) -> Alert:
    return await service.get_alert(pool, alert_id)


@router.post(
    "/alerts/{alert_id}/acknowledge",
    responses={**_NOT_FOUND, 409: {"model": ErrorBody, "description": "the alert is not open"}},
)
async def acknowledge(pool: PoolDep, alert_id: RowId, caller: Operator) -> Alert:
    """Acknowledge an open alert in the name of the calling key; the evaluator resolves it
    when readings return to normal."""
    return await service.acknowledge(pool, alert_id, by=caller.name)
