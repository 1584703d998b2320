"""All of the API's SQL. Values are always parameters; the only identifiers in the text are table
and column names taken from the contract (devices/contract.py), never from the request."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg

from core.db import Connection
from devices.contract import District, Kind, latest_table, metric_names, readings_table


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
