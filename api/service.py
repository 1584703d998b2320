"""What each endpoint does: checks requests against the contract, calls the repository and shapes
the answer. No SQL here and no HTTP: errors are raised as ``ApiError``s."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Final

import asyncpg
import structlog

from api import repository
from api.errors import DATABASE_GONE, Conflict, InvalidQuery, NotFound, ServiceUnavailable
from api.schemas import (
    DeviceBulkResult,
    DevicePage,
    DevicePatch,
    DeviceStatus,
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
from core.db import Connection
from devices.contract import District, Kind, metric_names
from devices.credentials import (
    BrokerCommandFailed,
    BrokerUnavailable,
    Command,
    DynsecClient,
    commission_commands,
    enabled_commands,
    new_login,
    rotate_commands,
)
from devices.schemas import CommissionedDevice, Device, DeviceCreate, Location, MqttLogin

log = structlog.get_logger(__name__)

HEALTH_TIMEOUT_S: Final = 2.0
# Health also counts a refused socket, a slow answer and a closing pool as "unreachable".
_HEALTH_FAILURES: Final = (*DATABASE_GONE, OSError, TimeoutError, asyncpg.InterfaceError)
_CURSOR_VERSION: Final = "v1"


async def health(pool: asyncpg.Pool) -> Health:
    """Answer within a couple of seconds whether the database and TimescaleDB are usable."""
    try:
        async with pool.acquire(timeout=HEALTH_TIMEOUT_S) as conn:
            version = await repository.timescaledb_version(conn, HEALTH_TIMEOUT_S)
    except _HEALTH_FAILURES as exc:
        log.warning("health check failed", error=repr(exc))
        # Health needs no credentials: name the failure, keep addresses and messages in the log.
        raise ServiceUnavailable(
            f"database unreachable ({type(exc).__name__})", code="database_unavailable"
        ) from exc
    if version is None:
        raise ServiceUnavailable("timescaledb extension not installed", code="no_timescaledb")
    return Health(status="ok", database="ok", timescaledb=version)


# --- registry ---------------------------------------------------------------------------------


def _device(row: asyncpg.Record) -> Device:
    location = None if row["lat"] is None else Location(lat=row["lat"], lon=row["lon"])
    return Device(
        device_id=row["device_id"],
        kind=Kind(row["kind"]),
        district=District(row["district"]),
        location=location,
        metadata=row["metadata"],
        enabled=row["enabled"],
        status=row["status"],
        last_seen=row["last_seen"],
        created_at=row["created_at"],
    )


def _not_found(device_id: str) -> NotFound:
    return NotFound(f"no device {device_id!r}", code="device_not_found")


async def _device_row(conn: Connection, device_id: str) -> asyncpg.Record:
    row = await repository.get_device(conn, device_id)
    if row is None:
        raise _not_found(device_id)
    return row


async def _at_broker(broker: DynsecClient, commands: list[Command]) -> None:
    """Apply login changes at the broker; callers run this inside their registry transaction,
    so a refusal rolls the registry change back too."""
    try:
        await broker.execute(commands)
    except BrokerUnavailable as exc:
        raise ServiceUnavailable(str(exc), code="broker_unavailable") from exc
    except BrokerCommandFailed as exc:
        log.error("broker refused a registry command", error=str(exc))
        raise ServiceUnavailable(
            f"the broker refused the device login change: {exc}", code="broker_refused"
        ) from exc


def _commissioned(row: asyncpg.Record, login: MqttLogin) -> CommissionedDevice:
    return CommissionedDevice(**_device(row).model_dump(), mqtt=login)


async def _insert(conn: Connection, body: DeviceCreate) -> asyncpg.Record | None:
    return await repository.insert_device(
        conn,
        device_id=body.device_id,
        kind=body.kind,
        district=body.district,
        lat=body.location.lat if body.location else None,
        lon=body.location.lon if body.location else None,
        metadata=body.metadata,
        enabled=body.enabled,
    )


async def create_device(
    pool: asyncpg.Pool, broker: DynsecClient, body: DeviceCreate
) -> CommissionedDevice:
    """Register a device and issue its broker login; an id that exists is a conflict, never an
    overwrite."""
    login = new_login(body.kind, body.device_id)
    async with pool.acquire() as conn, conn.transaction():
        row = await _insert(conn, body)
        if row is None:
            raise Conflict(f"device {body.device_id!r} already exists", code="device_exists")
        await _at_broker(broker, commission_commands(body.kind, login, enabled=body.enabled))
    log.info("device registered", device_id=body.device_id, kind=body.kind.value)
    return _commissioned(row, login)


async def create_devices(
    pool: asyncpg.Pool,
    broker: DynsecClient,
    bodies: list[DeviceCreate],
    *,
    skip_existing: bool,
) -> DeviceBulkResult:
    """Register a commissioning list in one transaction: all or nothing. Ids already registered
    are a conflict naming them all, or, with ``skip_existing``, are left as they are."""
    created: list[CommissionedDevice] = []
    existing: list[str] = []
    commands: list[Command] = []
    async with pool.acquire() as conn, conn.transaction():
        for body in bodies:
            row = await _insert(conn, body)
            if row is None:
                existing.append(body.device_id)
                continue
            login = new_login(body.kind, body.device_id)
            commands += commission_commands(body.kind, login, enabled=body.enabled)
            created.append(_commissioned(row, login))
        if existing and not skip_existing:
            raise Conflict(
                {"message": "devices already registered; nothing was created", "ids": existing},
                code="devices_exist",
            )
        await _at_broker(broker, commands)
    log.info("devices registered in bulk", created=len(created), skipped=len(existing))
    return DeviceBulkResult(created=created, skipped=existing)


async def rotate_login(pool: asyncpg.Pool, broker: DynsecClient, device_id: str) -> MqttLogin:
    """A new secret for the device; connections made with the old one are dropped at once."""
    async with pool.acquire() as conn:
        row = await _device_row(conn, device_id)
    login = new_login(Kind(row["kind"]), device_id)
    await _at_broker(broker, rotate_commands(login, enabled=row["enabled"]))
    log.info("device login rotated", device_id=device_id)
    return login


async def list_devices(
    pool: asyncpg.Pool,
    *,
    kind: Kind | None,
    district: District | None,
    enabled: bool | None,
    status: DeviceStatus | None,
    limit: int,
    offset: int,
) -> DevicePage:
    async with pool.acquire() as conn:
        rows, total = await repository.list_devices(
            conn,
            kind=kind,
            district=district,
            enabled=enabled,
            status=status,
            limit=limit,
            offset=offset,
        )
    return DevicePage(items=[_device(row) for row in rows], total=total, limit=limit, offset=offset)


async def get_device(pool: asyncpg.Pool, device_id: str) -> Device:
    async with pool.acquire() as conn:
        return _device(await _device_row(conn, device_id))


async def update_device(
    pool: asyncpg.Pool, broker: DynsecClient, device_id: str, patch: DevicePatch
) -> Device:
    """Apply the fields present in the request body; absent fields keep their values. Enabling
    or disabling takes effect at the broker in the same step."""
    sent = patch.model_fields_set
    location = patch.location
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.update_device(
            conn,
            device_id,
            district=patch.district,
            set_location="location" in sent,
            lat=location.lat if location else None,
            lon=location.lon if location else None,
            metadata=patch.metadata,
            enabled=patch.enabled,
        )
        if row is None:
            raise _not_found(device_id)
        if patch.enabled is not None:
            await _at_broker(broker, enabled_commands(device_id, enabled=patch.enabled))
    log.info("device updated", device_id=device_id, fields=sorted(sent))
    return _device(row)


async def disable_device(pool: asyncpg.Pool, broker: DynsecClient, device_id: str) -> Device:
    """Disable rather than delete: the device's readings and history stay queryable, and the
    broker disconnects it and refuses its login from now on."""
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.disable_device(conn, device_id)
        if row is None:
            raise _not_found(device_id)
        await _at_broker(broker, enabled_commands(device_id, enabled=False))
    log.info("device disabled", device_id=device_id)
    return _device(row)


# --- latest and raw readings ------------------------------------------------------------------


def _values(kind: Kind, row: asyncpg.Record) -> Values:
    return {name: row[name] for name in metric_names(kind)}


async def latest_of_device(pool: asyncpg.Pool, device_id: str) -> LatestReading:
    """The device's reading with the newest ``ts``, whatever order they arrived in."""
    async with pool.acquire() as conn:
        device = await _device_row(conn, device_id)
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


async def latest(pool: asyncpg.Pool, kind: Kind | None, district: District | None) -> LatestList:
    """The newest reading of every device (of a kind and district if given) that has one."""
    items: list[LatestReading] = []
    async with pool.acquire() as conn:
        for each in [kind] if kind else list(Kind):
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
    invalid = InvalidQuery("cursor is not one this API issued", code="invalid_cursor")
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
        kind = Kind((await _device_row(conn, device_id))["kind"])
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
