"""The alert evaluator and the alert feed.

Every api replica runs the evaluator loop; each pass takes a Postgres advisory transaction lock,
so one replica evaluates at a time, and a partial unique index keeps a single unresolved alert
per rule and device regardless. Changes are sent with NOTIFY, so every replica's feed hears them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import asyncpg
import orjson
import structlog
from pydantic import ValidationError

from api.alerts import repository
from api.alerts.schemas import (
    Alert,
    AlertList,
    AlertState,
    Condition,
    Rule,
    RuleCreate,
    RuleFields,
    RuleList,
    RulePatch,
)
from core.config import Settings
from core.db import DATABASE_UNAVAILABLE, Connection
from core.errors import Conflict, Invalid, NotFound
from core.fanout import FanOut, Mailbox
from devices import service as registry
from devices.contract import Kind

log = structlog.get_logger(__name__)

LISTEN_RETRY_S: Final = 2.0


@dataclass
class Evaluation:
    opened: int = 0
    resolved: int = 0


def _describe(rule: Rule, value: float | None, *, never_reported: bool = False) -> str:
    if rule.condition is Condition.OFFLINE:
        if never_reported:
            return f"no reading since it was commissioned, over {rule.window_s:g} s ago"
        return f"no reading for {rule.window_s:g} s, or the device reported offline"
    return (
        f"{rule.metric} {rule.condition.value} {rule.threshold:g} for {rule.window_s:g} s"
        f" (now {value:g})"
    )


def _ending(rule: Rule, value: float | None) -> str:
    """How an alert ended once its condition stayed cleared for the rule's window."""
    if rule.condition is Condition.OFFLINE:
        return f"resolved: the device has been reporting again for {rule.window_s:g} s"
    back = "" if value is None else f" (now {value:g})"
    return (
        f"resolved: {rule.metric} has not been {rule.condition.value} {rule.threshold:g}"
        f" for {rule.window_s:g} s{back}"
    )


async def _changed(conn: asyncpg.pool.PoolConnectionProxy, alert_id: int) -> None:
    row = await repository.get_alert(conn, alert_id)
    if row is not None:
        await repository.notify(conn, Alert.model_validate(dict(row)).model_dump_json())


@dataclass
class _Seen:
    """What one evaluation saw of a rule's devices."""

    # Devices whose condition held for the window, with the value and a note for the message.
    breaching: dict[str, tuple[float | None, bool]] = field(default_factory=dict)
    # Devices whose condition holds now, whether or not for the window yet.
    holding: set[str] = field(default_factory=set)
    # Devices seen with the condition cleared, with their newest value.
    normal: dict[str, float | None] = field(default_factory=dict)


async def _offline_state(
    conn: asyncpg.pool.PoolConnectionProxy, rule: Rule, active: set[str]
) -> _Seen:
    silent = await registry.silent_devices(
        conn,
        silent_for=timedelta(seconds=rule.window_s),
        kind=rule.kind.value if rule.kind else None,
        district=rule.district.value if rule.district else None,
        device_id=rule.device_id,
    )
    seen = _Seen(holding=set(silent))
    seen.breaching = {device_id: (None, not ever) for device_id, ever in silent.items()}
    seen.normal = dict.fromkeys(active - set(silent))
    return seen


async def _metric_state(conn: asyncpg.pool.PoolConnectionProxy, rule: Rule) -> _Seen:
    assert rule.kind is not None
    assert rule.metric is not None
    assert rule.threshold is not None
    window = timedelta(seconds=rule.window_s)
    rows = await repository.metric_state(
        conn,
        kind=Kind(rule.kind),
        metric=rule.metric,
        condition=rule.condition.value,
        threshold=rule.threshold,
        lookback=window * 2 + timedelta(minutes=1),
        district=rule.district.value if rule.district else None,
        device_id=rule.device_id,
    )
    seen = _Seen()
    for row in rows:
        if not row["breaching"]:
            seen.normal[row["device_id"]] = row["value"]
            continue
        seen.holding.add(row["device_id"])
        if row["newest"] - row["breach_since"] >= window:
            seen.breaching[row["device_id"]] = (row["value"], False)
    return seen


async def _evaluate_rule(conn: asyncpg.pool.PoolConnectionProxy, rule: Rule) -> Evaluation:
    result = Evaluation()
    active = await repository.active_alerts(conn, rule.rule_id)
    if rule.condition is Condition.OFFLINE:
        seen = await _offline_state(conn, rule, set(active))
    else:
        seen = await _metric_state(conn, rule)
    for device_id, (value, never) in seen.breaching.items():
        if device_id in active:
            continue
        message = _describe(rule, value, never_reported=never)
        alert_id = await repository.open_alert(conn, rule.rule_id, device_id, value, message)
        if alert_id is not None:
            result.opened += 1
            await _changed(conn, alert_id)
            log.info("alert opened", rule=rule.name, device_id=device_id, value=value)
    clearing = {d: a for d, a in active.items() if d in seen.normal}
    changed = await repository.mark_holding(
        conn, [a["alert_id"] for d, a in active.items() if d in seen.holding]
    )
    changed += await repository.mark_cleared(
        conn, [a["alert_id"] for a in clearing.values() if a["cleared_for_s"] is None]
    )
    for alert_id in changed:
        await _changed(conn, alert_id)
    for device_id, alert in clearing.items():
        cleared_for = alert["cleared_for_s"]
        if cleared_for is None or float(cleared_for) < rule.window_s:
            continue
        ending = _ending(rule, seen.normal[device_id])
        if await repository.resolve_alert(conn, alert["alert_id"], ending):
            result.resolved += 1
            await _changed(conn, alert["alert_id"])
            log.info("alert resolved", rule=rule.name, device_id=device_id)
    return result


async def evaluate(pool: asyncpg.Pool) -> Evaluation | None:
    """One pass over every enabled rule; None when another replica is evaluating."""
    total = Evaluation()
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.try_evaluator_lock(conn):
            return None
        for alert_id in await repository.resolve_disabled(conn):
            total.resolved += 1
            await _changed(conn, alert_id)
        for row in await repository.list_rules(conn, enabled_only=True):
            try:
                rule = Rule.model_validate(dict(row))
            except ValidationError as exc:
                # One broken rule must not silence the others.
                log.error("alert rule skipped: invalid", rule_id=row["rule_id"], error=str(exc))
                continue
            done = await _evaluate_rule(conn, rule)
            total.opened += done.opened
            total.resolved += done.resolved
    return total


async def run_evaluator(pool: asyncpg.Pool, interval_s: float) -> None:
    """Evaluate every ``interval_s`` until cancelled; an outage only delays it."""
    while True:
        try:
            await evaluate(pool)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("alert evaluation postponed, database unavailable", error=repr(exc))
        await asyncio.sleep(interval_s)


# Alert changes fanned out to this replica's feed clients, conflated per alert id (the newest
# state of an alert wins): the same mechanism as the live readings.
AlertFeed = FanOut[int, bytes]
AlertMailbox = Mailbox[int, bytes]


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _: event.set()


async def listen(settings: Settings, feed: AlertFeed) -> None:
    """Hear alert changes from every replica (LISTEN) and publish them to this one's feed."""

    def on_notify(_: Connection, __: int, ___: str, payload: object) -> None:
        text = str(payload)
        feed.publish(orjson.loads(text)["alert_id"], text.encode())

    while True:
        try:
            conn = await asyncpg.connect(
                settings.database_url, server_settings={"application_name": "api-alerts"}
            )
        except DATABASE_UNAVAILABLE as exc:
            log.warning("alert listener cannot connect", error=repr(exc))
            await asyncio.sleep(LISTEN_RETRY_S)
            continue
        closed = asyncio.Event()
        conn.add_termination_listener(_setter(closed))
        try:
            await conn.add_listener(repository.NOTIFY_CHANNEL, on_notify)
            await closed.wait()
        except DATABASE_UNAVAILABLE as exc:
            log.warning("alert listener lost its connection", error=repr(exc))
        finally:
            with contextlib.suppress(*DATABASE_UNAVAILABLE):
                await asyncio.shield(conn.close(timeout=2))
        await asyncio.sleep(LISTEN_RETRY_S)


# --- what the API does with rules and alerts ---------------------------------------------------


async def list_rules(pool: asyncpg.Pool) -> RuleList:
    async with pool.acquire() as conn:
        rows = await repository.list_rules(conn)
    return RuleList(items=[Rule.model_validate(dict(row)) for row in rows])


async def create_rule(pool: asyncpg.Pool, body: RuleCreate) -> Rule:
    """Add a rule; a name that exists is a conflict."""
    async with pool.acquire() as conn:
        row = await repository.insert_rule(conn, body.model_dump(mode="json"))
    if row is None:
        raise Conflict(f"a rule named {body.name!r} exists", code="rule_exists")
    return Rule.model_validate(dict(row))


async def update_rule(pool: asyncpg.Pool, rule_id: int, patch: RulePatch) -> Rule:
    """Apply a partial update, checking the rule it makes as a whole (a threshold on an offline
    rule is refused, not stored for the evaluator to trip over); a taken name is a conflict."""
    changes = patch.model_dump(mode="json", exclude_none=True)  # None keeps a field
    async with pool.acquire() as conn, conn.transaction():
        current = await repository.get_rule(conn, rule_id)
        if current is None:
            raise NotFound(f"no rule {rule_id}", code="rule_not_found")
        fields = {name: current[name] for name in RuleFields.model_fields}
        try:
            RuleFields.model_validate({**fields, **changes})
        except ValidationError as exc:
            messages = "; ".join(error["msg"] for error in exc.errors())
            raise Invalid(messages, code="invalid_rule") from exc
        try:
            row = await repository.update_rule(conn, rule_id, patch.model_dump(mode="json"))
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"a rule named {patch.name!r} exists", code="rule_exists") from exc
    if row is None:
        raise NotFound(f"no rule {rule_id}", code="rule_not_found")
    return Rule.model_validate(dict(row))


async def delete_rule(pool: asyncpg.Pool, rule_id: int) -> None:
    """Delete a rule and its alerts (disable it instead to keep the history)."""
    async with pool.acquire() as conn:
        if not await repository.delete_rule(conn, rule_id):
            raise NotFound(f"no rule {rule_id}", code="rule_not_found")


async def list_alerts(
    pool: asyncpg.Pool, states: list[AlertState] | None, device_id: str | None, limit: int
) -> AlertList:
    async with pool.acquire() as conn:
        rows = await repository.list_alerts(
            conn,
            states=[state.value for state in states] if states else None,
            device_id=device_id,
            limit=limit,
        )
    return AlertList(items=[Alert.model_validate(dict(row)) for row in rows])


async def get_alert(pool: asyncpg.Pool, alert_id: int) -> Alert:
    async with pool.acquire() as conn:
        row = await repository.get_alert(conn, alert_id)
    if row is None:
        raise NotFound(f"no alert {alert_id}", code="alert_not_found")
    return Alert.model_validate(dict(row))


async def acknowledge(
    pool: asyncpg.Pool, alert_id: int, *, by: str, note: str | None = None
) -> Alert:
    """Acknowledge an open alert, recording who, when and the note; any other state is a
    conflict."""
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.acknowledge(conn, alert_id, by, note)
        if row is not None:
            alert = Alert.model_validate(dict(row))
            await repository.notify(conn, alert.model_dump_json())
    if row is None:
        current = await get_alert(pool, alert_id)
        raise Conflict(
            f"alert {alert_id} is {current.state.value}, not open", code="alert_not_open"
        )
    log.info("alert acknowledged", alert_id=alert_id, by=by)
    return alert
