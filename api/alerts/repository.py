"""All of the alerts' SQL. Metric columns and tables come from the contract, never a request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import asyncpg

from core.db import Connection
from devices.contract import METRICS_BY_NAME, Kind, readings_table

NOTIFY_CHANNEL: Final = "alatau_alerts"
# Shared by every api replica: one evaluation pass at a time, wherever it runs.
_EVALUATOR_LOCK_KEY: Final = 0x616C6174_616C7274

_RULE_COLUMNS: Final = (
    "rule_id, name, condition, kind, metric, threshold, window_s, district, device_id,"
    " severity, enabled, created_at, updated_at"
)
_ALERT_SELECT: Final = (
    "SELECT a.alert_id, a.rule_id, r.name AS rule_name, r.severity, a.device_id, a.state,"
    " a.value, a.message, a.opened_at, a.acknowledged_at, a.acknowledged_by, a.note,"
    " a.cleared_at, a.resolved_at, a.resolution, a.updated_at"
    " FROM alerts AS a JOIN alert_rules AS r USING (rule_id)"
)
_OPERATORS: Final = {"above": ">", "below": "<"}


# --- rules ------------------------------------------------------------------------------------


async def list_rules(conn: Connection, *, enabled_only: bool = False) -> list[asyncpg.Record]:
    where = "WHERE enabled" if enabled_only else ""
    return await conn.fetch(f"SELECT {_RULE_COLUMNS} FROM alert_rules {where} ORDER BY rule_id")


async def get_rule(conn: Connection, rule_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE rule_id = $1", rule_id
    )


async def insert_rule(conn: Connection, fields: dict[str, Any]) -> asyncpg.Record | None:
    """Insert a rule; None when its name is taken."""
    return await conn.fetchrow(
        "INSERT INTO alert_rules (name, condition, kind, metric, threshold, window_s, district,"
        " device_id, severity, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        f" ON CONFLICT (name) DO NOTHING RETURNING {_RULE_COLUMNS}",
        fields["name"],
        fields["condition"],
        fields["kind"],
        fields["metric"],
        fields["threshold"],
        fields["window_s"],
        fields["district"],
        fields["device_id"],
        fields["severity"],
        fields["enabled"],
    )


async def update_rule(
    conn: Connection, rule_id: int, fields: dict[str, Any]
) -> asyncpg.Record | None:
    """Change only the fields given (None keeps a column)."""
    return await conn.fetchrow(
        "UPDATE alert_rules SET name = COALESCE($2, name), threshold = COALESCE($3, threshold),"
        " window_s = COALESCE($4, window_s), severity = COALESCE($5, severity),"
        " enabled = COALESCE($6, enabled), updated_at = now()"
        f" WHERE rule_id = $1 RETURNING {_RULE_COLUMNS}",
        rule_id,
        fields.get("name"),
        fields.get("threshold"),
        fields.get("window_s"),
        fields.get("severity"),
        fields.get("enabled"),
    )


async def delete_rule(conn: Connection, rule_id: int) -> bool:
    return await conn.execute("DELETE FROM alert_rules WHERE rule_id = $1", rule_id) != "DELETE 0"


# --- alerts -----------------------------------------------------------------------------------


async def list_alerts(
    conn: Connection, *, states: list[str] | None, device_id: str | None, limit: int
) -> list[asyncpg.Record]:
    """Alerts newest first, filtered by state(s) and device."""
    return await conn.fetch(
        f"{_ALERT_SELECT} WHERE ($1::text[] IS NULL OR a.state = ANY($1::text[]))"
        " AND ($2::text IS NULL OR a.device_id = $2) ORDER BY a.opened_at DESC, a.alert_id DESC"
        " LIMIT $3",
        states,
        device_id,
        limit,
    )


async def get_alert(conn: Connection, alert_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"{_ALERT_SELECT} WHERE a.alert_id = $1", alert_id)


async def acknowledge(
    conn: Connection, alert_id: int, by: str, note: str | None
) -> asyncpg.Record | None:
    """Acknowledge an open alert; None when it is not open (unknown, acknowledged, resolved)."""
    alert_id_done = await conn.fetchval(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2,"
        " note = $3, updated_at = now() WHERE alert_id = $1 AND state = 'open' RETURNING alert_id",
        alert_id,
        by,
        note,
    )
    return None if alert_id_done is None else await get_alert(conn, alert_id)


async def notify(conn: Connection, payload: str) -> None:
    """Tell every api replica (delivered at commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)


# --- evaluation -------------------------------------------------------------------------------


async def try_evaluator_lock(conn: Connection) -> bool:
    """Take the evaluator's transaction lock, or say another replica holds it."""
    locked: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _EVALUATOR_LOCK_KEY)
    return locked


async def active_alerts(conn: Connection, rule_id: int) -> dict[str, asyncpg.Record]:
    """Device id to (alert_id, cleared_for_s) of the rule's unresolved alerts; cleared_for_s is
    how long the condition has been seen cleared, None while it holds."""
    rows = await conn.fetch(
        "SELECT device_id, alert_id, extract(epoch FROM now() - cleared_at) AS cleared_for_s"
        " FROM alerts WHERE rule_id = $1 AND state <> 'resolved'",
        rule_id,
    )
    return {row["device_id"]: row for row in rows}


async def mark_cleared(conn: Connection, alert_ids: list[int]) -> list[int]:
    """The condition of these alerts is seen cleared: from now on, unless already noted.
    Returns the alerts changed."""
    rows = await conn.fetch(
        "UPDATE alerts SET cleared_at = now(), updated_at = now()"
        " WHERE alert_id = ANY($1::bigint[]) AND cleared_at IS NULL RETURNING alert_id",
        alert_ids,
    )
    return [row["alert_id"] for row in rows]


async def mark_holding(conn: Connection, alert_ids: list[int]) -> list[int]:
    """The condition of these alerts holds again: their clearing starts over. Returns the
    alerts changed."""
    rows = await conn.fetch(
        "UPDATE alerts SET cleared_at = NULL, updated_at = now()"
        " WHERE alert_id = ANY($1::bigint[]) AND cleared_at IS NOT NULL RETURNING alert_id",
        alert_ids,
    )
    return [row["alert_id"] for row in rows]


async def resolve_disabled(conn: Connection) -> list[int]:
    """Resolve every unresolved alert of a disabled device, open or acknowledged."""
    rows = await conn.fetch(
        "UPDATE alerts AS a SET state = 'resolved', resolved_at = now(), updated_at = now(),"
        " resolution = 'the device was disabled' FROM devices AS d"
        " WHERE d.device_id = a.device_id AND NOT d.enabled AND a.state <> 'resolved'"
        " RETURNING a.alert_id"
    )
    return [row["alert_id"] for row in rows]


def _metric_state_sql(kind: Kind, metric: str, condition: str) -> str:
    if metric not in METRICS_BY_NAME[kind]:
        raise ValueError(f"{metric!r} is not a {kind.value} metric")
    operator = _OPERATORS[condition]
    return (
        "WITH recent AS ("
        f"  SELECT r.device_id, r.ts, r.{metric} AS value,"
        f"         r.{metric} {operator} $1::double precision AS breach"
        f"  FROM {readings_table(kind)} AS r JOIN devices AS d USING (device_id)"
        f"  WHERE r.ts > now() - $2::interval AND r.{metric} IS NOT NULL AND d.enabled"
        "    AND ($3::text IS NULL OR d.district = $3) AND ($4::text IS NULL OR r.device_id = $4)"
        "), state AS ("
        "  SELECT device_id, max(ts) AS newest, max(ts) FILTER (WHERE NOT breach) AS last_ok,"
        "         (array_agg(value ORDER BY ts DESC))[1] AS value"
        "  FROM recent GROUP BY device_id"
        ") SELECT s.device_id, s.newest, s.value, s.last_ok IS DISTINCT FROM s.newest AS breaching,"
        "  (SELECT min(r.ts) FROM recent AS r WHERE r.device_id = s.device_id"
        "     AND (s.last_ok IS NULL OR r.ts > s.last_ok)) AS breach_since"
        " FROM state AS s"
    )


async def metric_state(
    conn: Connection,
    *,
    kind: Kind,
    metric: str,
    condition: str,
    threshold: float,
    lookback: timedelta,
    district: str | None,
    device_id: str | None,
) -> list[asyncpg.Record]:
    """Per device with recent readings: the newest value, whether it breaches the threshold,
    and since when (reading time) the readings have breached without a break."""
    return await conn.fetch(
        _metric_state_sql(kind, metric, condition), threshold, lookback, district, device_id
    )


async def open_alert(
    conn: Connection, rule_id: int, device_id: str, value: float | None, message: str
) -> int | None:
    """Open an alert; None when one is already active (another replica was first)."""
    alert_id: int | None = await conn.fetchval(
        "INSERT INTO alerts (rule_id, device_id, value, message) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (rule_id, device_id) WHERE state <> 'resolved' DO NOTHING RETURNING alert_id",
        rule_id,
        device_id,
        value,
        message,
    )
    return alert_id


async def resolve_alert(conn: Connection, alert_id: int, resolution: str) -> bool:
    result = await conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = now(), updated_at = now(),"
        " resolution = $2 WHERE alert_id = $1 AND state <> 'resolved'",
        alert_id,
        resolution,
    )
    return result != "UPDATE 0"
