"""All of the API's SQL. Values are always parameters; the only identifiers in the text are table
and column names taken from the contract (devices/contract.py), never from the request."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg

from core.db import Connection
from devices.contract import (
    METRICS_BY_NAME,
    District,
    Kind,
    Metric,
    latest_table,
    metric_names,
    readings_table,
)
from rollups.schemas import Tier, rollup_table


def _reading_columns(kind: Kind, prefix: str = "") -> str:
    return ", ".join(f"{prefix}{name}" for name in ("ts", "received_at", *metric_names(kind)))


def _where(clauses: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


# --- health -----------------------------------------------------------------------------------


async def timescaledb_version(conn: Connection, timeout_s: float) -> str | None:
    """The installed TimescaleDB version, or None when the extension is missing."""
    version: str | None = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", timeout=timeout_s
    )
    return version


async def replication_state(conn: Connection, timeout_s: float) -> tuple[bool, float | None]:
    """Whether the server is a standby, and how far its replay is behind: 0 when it has replayed
    all the WAL it received, else the age of the newest transaction it replayed (the primary's
    commit time against this server's clock)."""
    row = await conn.fetchrow(
        "SELECT pg_is_in_recovery() AS standby,"
        " CASE WHEN NOT pg_is_in_recovery() THEN NULL"
        " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0"
        " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag_s",
        timeout=timeout_s,
    )
    assert row is not None  # a SELECT without FROM returns one row
    return bool(row["standby"]), row["lag_s"]


# --- readings ---------------------------------------------------------------------------------

_LATEST_OF_DEVICE: Final = {
    kind: f"SELECT {_reading_columns(kind)} FROM {readings_table(kind)}"
    " WHERE device_id = $1 ORDER BY ts DESC LIMIT 1"
    for kind in Kind
}

# The maintained newest reading per device (ingest keeps it, see migrations/0030): one row a
# device, so the cost does not grow with raw's chunks or the fleet's history.
_LATEST_OF_KIND: Final = {
    kind: f"SELECT d.device_id, d.district, {_reading_columns(kind, 'l.')}"
    f" FROM devices AS d JOIN {latest_table(kind)} AS l ON l.device_id = d.device_id"
    " WHERE d.kind = $1 AND ($2::text IS NULL OR d.district = $2)"
    " ORDER BY d.device_id"
    for kind in Kind
}

# Keyset pages: the first page starts at ``from`` inclusive, later ones strictly after the cursor.
_READINGS: Final = {
    (kind, after_cursor): f"SELECT {_reading_columns(kind)} FROM {readings_table(kind)}"
    f" WHERE device_id = $1 AND ts {'>' if after_cursor else '>='} $2 AND ts < $3"
    " ORDER BY ts LIMIT $4"
    for kind in Kind
    for after_cursor in (False, True)
}


async def latest_reading(conn: Connection, kind: Kind, device_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LATEST_OF_DEVICE[kind], device_id)


async def latest_readings(
    conn: Connection, kind: Kind, district: District | None
) -> list[asyncpg.Record]:
    """The newest reading of every device of a kind (devices without readings are left out)."""
    return await conn.fetch(_LATEST_OF_KIND[kind], kind.value, district.value if district else None)


async def readings(
    conn: Connection,
    kind: Kind,
    device_id: str,
    *,
    lower: datetime,
    after_cursor: bool,
    upper: datetime,
    limit: int,
) -> list[asyncpg.Record]:
    """Readings in ``[lower, upper)`` (``(lower, upper)`` after a cursor), oldest first."""
    return await conn.fetch(_READINGS[kind, after_cursor], device_id, lower, upper, limit)


# --- aggregates (the tiered SQL itself lives in rollups/) -----------------------------------


async def per_device_totals(
    conn: Connection,
    kind: Kind,
    device_ids: Sequence[str],
    metrics: Sequence[Metric],
    *,
    window: tuple[datetime, datetime],
) -> list[asyncpg.Record]:
    """Per device with readings in ``[start, end)``: ``readings`` (rows), and per metric
    ``<m>_n`` (non-null values) and ``<m>_sum``; read from raw, for the short windows of the
    KPIs (15 minutes, an hour)."""
    for metric in metrics:
        if metric.name not in METRICS_BY_NAME[kind]:
            raise ValueError(f"{metric.name} is not a {kind.value} metric")
    columns = "".join(
        f", count({m.name}) AS {m.name}_n, sum({m.name})::double precision AS {m.name}_sum"
        for m in metrics
    )
    return await conn.fetch(
        f"SELECT device_id, count(*) AS readings{columns} FROM {readings_table(kind)}"
        " WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3 GROUP BY device_id",
        list(device_ids),
        *window,
    )


async def learned_free_flow(
    conn: Connection,
    device_ids: Sequence[str],
    *,
    window: tuple[datetime, datetime],
    min_hours: int,
    percentile: float,
) -> dict[str, float]:
    """Per road with at least ``min_hours`` hourly mean speeds in ``[start, end)`` (from the
    hour tier), the ``percentile`` of those means: a free-flow speed learned from its history."""
    rows = await conn.fetch(
        "SELECT device_id, percentile_cont($4::double precision) WITHIN GROUP"
        " (ORDER BY avg_speed_kmh_sum / avg_speed_kmh_n) AS free_flow"
        f" FROM {rollup_table(Kind.TRAFFIC, Tier.HOUR)}"
        " WHERE device_id = ANY($1::text[]) AND bucket >= $2 AND bucket < $3"
        " AND avg_speed_kmh_n > 0 GROUP BY device_id HAVING count(*) >= $5",
        list(device_ids),
        *window,
        percentile,
        min_hours,
    )
    return {row["device_id"]: row["free_flow"] for row in rows}


# --- rejections -------------------------------------------------------------------------------


async def rejections(
    conn: Connection,
    *,
    device_id: str | None,
    reason: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Refused readings, newest first; only the filters given become conditions."""
    clauses: list[str] = []
    args: list[Any] = []
    for condition, value in (
        ("device_id = ${}", device_id),
        ("reason = ${}", reason),
        ("received_at >= ${}", start),
        ("received_at < ${}", end),
    ):
        if value is not None:
            args.append(value)
            clauses.append(condition.format(len(args)))
    args.append(limit)
    return await conn.fetch(
        "SELECT received_at, topic, kind, device_id, reason, detail, payload"
        f" FROM ingest_rejections {_where(clauses)}"
        f" ORDER BY received_at DESC LIMIT ${len(args)}",
        *args,
    )
