"""Health, latest and raw readings, rejections: checks requests against the contract, calls the
repository and shapes the answer. No SQL here and no HTTP: errors are the core ones."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Final

import asyncpg
import structlog

from api import repository
from api.broker.management import Management
from api.metrics import READ_REPLICA_LAG, READ_REPLICA_UP
from api.schemas import (
    EdgeQueue,
    Health,
    LatestList,
    LatestReading,
    RawReading,
    ReadingsPage,
    Rejection,
    RejectionList,
    TimeRange,
    Values,
)
from core.db import DATABASE_UNAVAILABLE
from core.errors import Invalid, NotFound, Unavailable
from devices.contract import District, Kind, metric_names
from devices.service import device_row

log = structlog.get_logger(__name__)

HEALTH_TIMEOUT_S: Final = 2.0
_CURSOR_VERSION: Final = "v1"


async def health(
    pool: asyncpg.Pool,
    read_pool: asyncpg.Pool | None,
    edge: str,
    management: Management | None,
    queue: str,
) -> Health:
    """Answer within a couple of seconds whether the primary, the read replica (if any) and
    TimescaleDB are usable, and on the city edge how far behind ingest is. A 503 only when no
    database answers: with one of the two away, the api still serves what the other holds
    (the broker being away is reported too, not a 503: the api's reads do not need it)."""
    version, primary_error = await _database_version(pool)
    read_state, lag_s = "primary", None
    if read_pool is not None:
        read_state, lag_s, read_version = await _replica_state(read_pool)
        version = version or read_version
    if version is None:
        if primary_error is not None:
            # Health needs no credentials: name the failure, keep addresses in the log.
            raise Unavailable(
                f"database unreachable ({primary_error})", code="database_unavailable"
            )
        raise Unavailable("timescaledb extension not installed", code="no_timescaledb")
    edge_queue, edge_error = await _edge_queue(management, queue)
    database = "ok" if primary_error is None else "unavailable"
    return Health(
        status="ok" if database == "ok" and read_state != "unavailable" else "degraded",
        database=database,
        read_database=read_state,
        replica_lag_s=lag_s,
        timescaledb=version,
        edge=edge,
        edge_queue=edge_queue,
        edge_error=edge_error,
    )


async def _database_version(pool: asyncpg.Pool) -> tuple[str | None, str | None]:
    """The TimescaleDB version the primary reports, or why it could not be asked."""
    try:
        async with pool.acquire(timeout=HEALTH_TIMEOUT_S) as conn:
            return await repository.timescaledb_version(conn, HEALTH_TIMEOUT_S), None
    except DATABASE_UNAVAILABLE as exc:
        log.warning("health check failed", database="primary", error=repr(exc))
        return None, type(exc).__name__


async def _replica_state(read_pool: asyncpg.Pool) -> tuple[str, float | None, str | None]:
    """The read replica's state (ok or unavailable), its replay lag, its TimescaleDB version;
    the lag also goes to /metrics."""
    try:
        async with read_pool.acquire(timeout=HEALTH_TIMEOUT_S) as conn:
            standby, lag_s = await repository.replication_state(conn, HEALTH_TIMEOUT_S)
            version = await repository.timescaledb_version(conn, HEALTH_TIMEOUT_S)
    except DATABASE_UNAVAILABLE as exc:
        log.warning("health check failed", database="read replica", error=repr(exc))
        READ_REPLICA_UP.set(0)
        return "unavailable", None, None
    if not standby:
        log.warning("DATABASE_READ_URL names a server that is not a standby")
    READ_REPLICA_UP.set(1)
    READ_REPLICA_LAG.set(lag_s if lag_s is not None else float("nan"))
    return "ok", lag_s, version


async def _edge_queue(
    management: Management | None, queue: str
) -> tuple[EdgeQueue | None, str | None]:
    if management is None:
        return None, None
    try:
        state = await asyncio.wait_for(management.queue_state(queue), HEALTH_TIMEOUT_S)
    except (Unavailable, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return EdgeQueue.model_validate(state), None


async def read_replica_state(read_pool: asyncpg.Pool | None) -> None:
    """Refresh the replica gauges of /metrics (nothing to do without a replica)."""
    if read_pool is not None:
        await _replica_state(read_pool)


# --- latest and raw readings ------------------------------------------------------------------


def _values(kind: Kind, row: asyncpg.Record) -> Values:
    return {name: row[name] for name in metric_names(kind)}


async def latest_of_device(pool: asyncpg.Pool, device_id: str) -> LatestReading:
    """The device's reading with the newest ``ts``, whatever order they arrived in."""
    async with pool.acquire() as conn:
        device = await device_row(conn, device_id)
        kind = Kind(device["kind"])
        row = await repository.latest_reading(conn, kind, device_id)
    if row is None:
        raise NotFound(f"device {device_id!r} has no readings", code="no_readings")
    return LatestReading(
        device_id=device_id,
        kind=kind,
        district=District(device["district"]),
        ts=row["ts"],
        received_at=row["received_at"],
        values=_values(kind, row),
    )


async def latest(pool: asyncpg.Pool, kinds: list[Kind], district: District | None) -> LatestList:
    """The newest reading of every device of ``kinds`` (and the district if given) that has
    one, kind by kind in the contract's order."""
    items: list[LatestReading] = []
    async with pool.acquire() as conn:
        for each in [kind for kind in Kind if kind in kinds]:
            for row in await repository.latest_readings(conn, each, district):
                items.append(
                    LatestReading(
                        device_id=row["device_id"],
                        kind=each,
                        district=District(row["district"]),
                        ts=row["ts"],
                        received_at=row["received_at"],
                        values=_values(each, row),
                    )
                )
    return LatestList(items=items)


def encode_cursor(ts: datetime) -> str:
    """An opaque page token: the last ``ts`` served, so the next page starts strictly after it."""
    text = f"{_CURSOR_VERSION}:{ts.astimezone(UTC).isoformat()}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> datetime:
    """The ``ts`` inside a cursor from ``encode_cursor``; anything else is a 422."""
    invalid = Invalid("cursor is not one this API issued", code="invalid_cursor")
    try:
        # binascii.Error and UnicodeDecodeError are both ValueErrors.
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, iso = text.partition(":")
        ts = datetime.fromisoformat(iso)
    except ValueError:
        raise invalid from None
    if version != _CURSOR_VERSION or ts.tzinfo is None:
        raise invalid
    return ts


async def readings_page(
    pool: asyncpg.Pool, device_id: str, window: TimeRange, limit: int, cursor: str | None
) -> ReadingsPage:
    """One page of raw readings in ``ts`` order, with the cursor of the next page if any."""
    lower, after_cursor = window.start, False
    if cursor is not None:
        last = decode_cursor(cursor)
        if last >= window.start:
            lower, after_cursor = last, True
    async with pool.acquire() as conn:
        kind = Kind((await device_row(conn, device_id))["kind"])
        # One row more than asked says whether another page exists without a count query.
        rows = await repository.readings(
            conn,
            kind,
            device_id,
            lower=lower,
            after_cursor=after_cursor,
            upper=window.end,
            limit=limit + 1,
        )
    items = [
        RawReading(ts=row["ts"], received_at=row["received_at"], values=_values(kind, row))
        for row in rows[:limit]
    ]
    next_cursor = encode_cursor(rows[limit - 1]["ts"]) if len(rows) > limit else None
    return ReadingsPage(items=items, next_cursor=next_cursor)


# --- rejections -------------------------------------------------------------------------------


def _rejection(row: asyncpg.Record) -> Rejection:
    raw: bytes = row["payload"]
    try:
        text, exact = raw.decode("utf-8"), None
    except UnicodeDecodeError:
        # The text view is for reading; the base64 keeps the bytes exactly as they arrived.
        text, exact = raw.decode("utf-8", errors="replace"), base64.b64encode(raw).decode()
    return Rejection(
        received_at=row["received_at"],
        topic=row["topic"],
        kind=row["kind"],
        device_id=row["device_id"],
        reason=row["reason"],
        detail=row["detail"],
        payload=text,
        payload_base64=exact,
    )


async def rejections(
    pool: asyncpg.Pool,
    *,
    device_id: str | None,
    reason: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> RejectionList:
    """Refused readings, newest first, with their payloads as they arrived."""
    async with pool.acquire() as conn:
        rows = await repository.rejections(
            conn, device_id=device_id, reason=reason, start=start, end=end, limit=limit
        )
    return RejectionList(items=[_rejection(row) for row in rows])
