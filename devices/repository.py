"""All SQL on the device registry (the ``devices`` table): the one place any part reads or
writes it. Values are always parameters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

import asyncpg

from core.db import Connection
from devices.contract import District, Kind
from devices.schemas import DeviceCreate, Presence

_DEVICE_COLUMNS: Final = (
    "device_id, kind, district, lat, lon, metadata, enabled, status, last_seen, created_at"
)


def _where(clauses: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


async def insert_device(
    conn: Connection,
    *,
    device_id: str,
    kind: Kind,
    district: District,
    lat: float | None,
    lon: float | None,
    metadata: dict[str, Any],
    enabled: bool,
) -> asyncpg.Record | None:
    """Insert a device; None when the id is taken (no exception, so no aborted transaction)."""
    return await conn.fetchrow(
        "INSERT INTO devices (device_id, kind, district, lat, lon, metadata, enabled)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        f" ON CONFLICT (device_id) DO NOTHING RETURNING {_DEVICE_COLUMNS}",
        device_id,
        kind.value,
        district.value,
        lat,
        lon,
        metadata,
        enabled,
    )


async def insert_devices(conn: Connection, bodies: Sequence[DeviceCreate]) -> list[asyncpg.Record]:
    """Insert a commissioning list in one statement; returns the rows inserted (ids already
    taken are left as they are and not returned)."""
    return await conn.fetch(
        "INSERT INTO devices (device_id, kind, district, lat, lon, metadata, enabled)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[],"
        " $6::jsonb[], $7::bool[])"
        f" ON CONFLICT (device_id) DO NOTHING RETURNING {_DEVICE_COLUMNS}",
        [b.device_id for b in bodies],
        [b.kind.value for b in bodies],
        [b.district.value for b in bodies],
        [b.location.lat if b.location else None for b in bodies],
        [b.location.lon if b.location else None for b in bodies],
        [b.metadata for b in bodies],
        [b.enabled for b in bodies],
    )


async def get_device(conn: Connection, device_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = $1", device_id
    )


async def list_devices(
    conn: Connection,
    *,
    kind: Kind | None,
    district: District | None,
    enabled: bool | None,
    status: str | None,
    search: str | None = None,
    limit: int,
    offset: int,
) -> tuple[list[asyncpg.Record], int]:
    """One page of devices in id order, and how many match in all; ``search`` matches part of
    the id, the district or ``metadata.name``, ignoring case."""
    clauses: list[str] = []
    args: list[Any] = []
    if search:
        # LIKE's own wildcards in the text are literal characters.
        args.append("%" + re.sub(r"([\\%_])", r"\\\1", search) + "%")
        clauses.append(
            f"(device_id ILIKE ${len(args)} OR district ILIKE ${len(args)}"
            f" OR metadata->>'name' ILIKE ${len(args)})"
        )
    for column, value in (
        ("kind", kind.value if kind else None),
        ("district", district.value if district else None),
        ("enabled", enabled),
        ("status", status),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    where = _where(clauses)
    total: int = await conn.fetchval(f"SELECT count(*) FROM devices {where}", *args)
    rows = await conn.fetch(
        f"SELECT {_DEVICE_COLUMNS} FROM devices {where} ORDER BY device_id"
        f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args,
        limit,
        offset,
    )
    return rows, total


async def update_device(
    conn: Connection,
    device_id: str,
    *,
    district: District | None,
    set_location: bool,
    lat: float | None,
    lon: float | None,
    metadata: dict[str, Any] | None,
    enabled: bool | None,
) -> asyncpg.Record | None:
    """Change only what is given (None keeps a column; ``set_location`` may clear lat/lon)."""
    return await conn.fetchrow(
        "UPDATE devices SET"
        " district = COALESCE($2, district),"
        " lat = CASE WHEN $3::boolean THEN $4 ELSE lat END,"
        " lon = CASE WHEN $3::boolean THEN $5 ELSE lon END,"
        " metadata = COALESCE($6::jsonb, metadata),"
        " enabled = COALESCE($7, enabled),"
        " updated_at = now()"
        f" WHERE device_id = $1 RETURNING {_DEVICE_COLUMNS}",
        device_id,
        district.value if district else None,
        set_location,
        lat,
        lon,
        metadata,
        enabled,
    )


async def directory_rows(
    conn: Connection, device_ids: Sequence[str] | None = None
) -> list[asyncpg.Record]:
    """Kind, district and enabled flag of every device, or of the ones named."""
    if device_ids is None:
        return await conn.fetch("SELECT device_id, kind, district, enabled FROM devices")
    return await conn.fetch(
        "SELECT device_id, kind, district, enabled FROM devices WHERE device_id = ANY($1::text[])",
        list(device_ids),
    )


async def devices_of(
    conn: Connection, kind: Kind, district: District | None
) -> list[asyncpg.Record]:
    """Every device of a kind (in a district if given), enabled or not: history counts."""
    return await conn.fetch(
        f"SELECT {_DEVICE_COLUMNS} FROM devices"
        " WHERE kind = $1 AND ($2::text IS NULL OR district = $2) ORDER BY device_id",
        kind.value,
        district.value if district else None,
    )


async def record_presence(conn: Connection, updates: Sequence[Presence]) -> None:
    """Last-seen times and online/offline states of a batch in one statement. Rows are locked in
    id order so replicas updating the same devices queue behind each other, never deadlock. A
    status received before the one stored (a batch that committed late) changes nothing."""
    ordered = sorted(updates)
    await conn.execute(
        "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[],"
        "  $5::timestamptz[]) AS u(device_id, kind, seen, status, status_at)),"
        " locked AS (SELECT d.device_id FROM devices AS d JOIN v"
        "  ON d.device_id = v.device_id AND d.kind = v.kind ORDER BY d.device_id FOR UPDATE OF d),"
        " newer AS (SELECT v.*, v.status IS NOT NULL AND (d.status_at IS NULL"
        "  OR v.status_at IS NULL OR v.status_at >= d.status_at) AS replaces"
        "  FROM v JOIN devices AS d ON d.device_id = v.device_id)"
        " UPDATE devices AS d SET"
        "  last_seen = CASE WHEN n.seen THEN now() ELSE d.last_seen END,"
        "  status = CASE WHEN n.replaces THEN n.status ELSE d.status END,"
        "  status_at = CASE WHEN n.replaces THEN n.status_at ELSE d.status_at END,"
        "  updated_at = CASE WHEN n.replaces THEN now() ELSE d.updated_at END"
        " FROM newer AS n JOIN locked ON locked.device_id = n.device_id"
        " WHERE d.device_id = n.device_id",
        [u.device_id for u in ordered],
        [u.kind.value for u in ordered],
        [u.seen for u in ordered],
        [u.status for u in ordered],
        [u.status_at for u in ordered],
    )


async def silent_devices(
    conn: Connection,
    *,
    silent_for: timedelta,
    kind: str | None,
    district: str | None,
    device_id: str | None,
) -> list[asyncpg.Record]:
    """Enabled devices silent for longer than ``silent_for``, or whose Last Will said offline."""
    return await conn.fetch(
        "SELECT device_id, last_seen, status FROM devices WHERE enabled"
        " AND ((last_seen IS NOT NULL AND last_seen < now() - $1::interval) OR status = 'offline')"
        " AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR district = $3)"
        " AND ($4::text IS NULL OR device_id = $4)",
        silent_for,
        kind,
        district,
        device_id,
    )


async def store_secrets(conn: Connection, secrets: Sequence[tuple[str, bytes]]) -> None:
    """Set the secret digests of (device id, SHA-256) pairs, replacing any earlier one."""
    await conn.execute(
        "INSERT INTO device_credentials (device_id, secret_hash)"
        " SELECT * FROM unnest($1::text[], $2::bytea[])"
        " ON CONFLICT (device_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash,"
        " issued_at = now()",
        [device_id for device_id, _ in secrets],
        [digest for _, digest in secrets],
    )


async def broker_login(conn: Connection, device_id: str) -> asyncpg.Record | None:
    """What the broker's login checks need of a device: kind, enabled flag and secret digest."""
    return await conn.fetchrow(
        "SELECT d.kind, d.enabled, c.secret_hash FROM devices AS d"
        " JOIN device_credentials AS c USING (device_id) WHERE d.device_id = $1",
        device_id,
    )
