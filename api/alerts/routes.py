"""HTTP routes of alerts: rules, alerts, acknowledgement and the live alert feed (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import StreamingResponse

from api import sse
from api.alerts import service
from api.alerts.schemas import (
    Alert,
    AlertList,
    AlertState,
    Rule,
    RuleCreate,
    RuleList,
    RulePatch,
)
from api.alerts.service import AlertFeed, AlertMailbox
from api.auth import Admin, Operator, live_principal, require
from api.dependencies import AlertFeedDep, PoolDep, SettingsDep
from api.keys.schemas import Role
from api.responses import AUTH, INVALID, conflict, not_found
from api.schemas import ErrorBody
from core import timestamps
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
    feed: AlertFeed, mailbox: AlertMailbox, snapshot: AlertList, heartbeat_s: float
) -> AsyncIterator[bytes]:
    try:
        yield sse.event("snapshot", snapshot.model_dump_json().encode())
        while True:
            if await mailbox.wait(heartbeat_s):
                yield b"".join(sse.event("alert", data) for data in mailbox.take())
            else:
                yield sse.event("heartbeat", timestamps.dumps({"ts": utc_now()}))
    finally:
        feed.unsubscribe(mailbox)


@feeds.get(
    "/alerts/live",
    dependencies=[Depends(live_principal)],
    response_class=StreamingResponse,
    responses=sse.OPENAPI,
)
async def alerts_live(
    pool: PoolDep, settings: SettingsDep, feed: AlertFeedDep
) -> StreamingResponse:
    """Server-Sent Events: ``snapshot`` of the unresolved alerts, then an ``alert`` event for
    every change (opened, acknowledged, resolved) made by any replica."""
    # Subscribed before the snapshot is read: a change in between is sent, never lost.
    mailbox = feed.subscribe()
    try:
        snapshot = await service.list_alerts(
            pool, [AlertState.OPEN, AlertState.ACKNOWLEDGED], None, 1000
        )
    except BaseException:
        feed.unsubscribe(mailbox)
        raise
    return sse.response(_alert_stream(feed, mailbox, snapshot, settings.live.heartbeat_s))


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
