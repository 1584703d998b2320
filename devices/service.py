"""The device registry: the one owner of the ``devices`` table that every part calls.

Commissioning, changes and logins for the api; a cached directory of who may publish for ingest
and the live feeds. Errors are the core ones (``NotFound``, ``Conflict``, ``Unavailable``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import timedelta

import asyncpg
import structlog

from core.db import Connection
from core.errors import Conflict, NotFound
from devices import repository
from devices.contract import District, Kind
from devices.credentials import DeviceLogins, new_login
from devices.schemas import (
    CommissionedDevice,
    Device,
    DeviceBulkResult,
    DeviceCreate,
    DeviceInfo,
    DevicePage,
    DevicePatch,
    DeviceStatus,
    Location,
    MqttLogin,
    Presence,
)

log = structlog.get_logger(__name__)


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


def device_not_found(device_id: str) -> NotFound:
    return NotFound(f"no device {device_id!r}", code="device_not_found")


async def device_row(conn: Connection, device_id: str) -> asyncpg.Record:
    """The device's registry row; an unknown id is ``device_not_found``."""
    row = await repository.get_device(conn, device_id)
    if row is None:
        raise device_not_found(device_id)
    return row


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


def _commissioned(row: asyncpg.Record, login: MqttLogin) -> CommissionedDevice:
    return CommissionedDevice(**_device(row).model_dump(), mqtt=login)


async def create_device(
    pool: asyncpg.Pool, logins: DeviceLogins, body: DeviceCreate
) -> CommissionedDevice:
    """Register a device and issue its broker login; an id that exists is a conflict, never an
    overwrite."""
    login = new_login(body.kind, body.device_id)
    async with pool.acquire() as conn, conn.transaction():
        row = await _insert(conn, body)
        if row is None:
            raise Conflict(f"device {body.device_id!r} already exists", code="device_exists")
        await logins.commission(conn, [(body.kind, login, body.enabled)])
    log.info("device registered", device_id=body.device_id, kind=body.kind.value)
    return _commissioned(row, login)


async def create_devices(
    pool: asyncpg.Pool, logins: DeviceLogins, bodies: list[DeviceCreate], *, skip_existing: bool
) -> DeviceBulkResult:
    """Register a commissioning list in one transaction: all or nothing. Ids already registered
    are a conflict naming them all, or, with ``skip_existing``, are left as they are."""
    created: list[CommissionedDevice] = []
    existing: list[str] = []
    issued: list[tuple[Kind, MqttLogin, bool]] = []
    async with pool.acquire() as conn, conn.transaction():
        rows = {row["device_id"]: row for row in await repository.insert_devices(conn, bodies)}
        for body in bodies:
            row = rows.get(body.device_id)
            if row is None:
                existing.append(body.device_id)
                continue
            login = new_login(body.kind, body.device_id)
            issued.append((body.kind, login, body.enabled))
            created.append(_commissioned(row, login))
        if existing and not skip_existing:
            raise Conflict(
                {"message": "devices already registered; nothing was created", "ids": existing},
                code="devices_exist",
            )
        if issued:
            await logins.commission(conn, issued)
    log.info("devices registered in bulk", created=len(created), skipped=len(existing))
    return DeviceBulkResult(created=created, skipped=existing)


async def rotate_login(pool: asyncpg.Pool, logins: DeviceLogins, device_id: str) -> MqttLogin:
    """A new secret for the device; connections made with the old one are dropped."""
    async with pool.acquire() as conn, conn.transaction():
        row = await device_row(conn, device_id)
        login = new_login(Kind(row["kind"]), device_id)
        await logins.rotate(conn, Kind(row["kind"]), login, enabled=row["enabled"])
    await logins.after_commit([device_id])
    log.info("device login rotated", device_id=device_id)
    return login


async def list_devices(
    pool: asyncpg.Pool,
    *,
    kind: Kind | None,
    district: District | None,
    enabled: bool | None,
    status: DeviceStatus | None,
    search: str | None = None,
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
            search=search,
            limit=limit,
            offset=offset,
        )
    return DevicePage(items=[_device(row) for row in rows], total=total, limit=limit, offset=offset)


async def get_device(pool: asyncpg.Pool, device_id: str) -> Device:
    async with pool.acquire() as conn:
        return await get_device_on(conn, device_id)


async def get_device_on(conn: Connection, device_id: str) -> Device:
    """The device, read on a connection the caller holds; an unknown id is a ``NotFound``."""
    return _device(await device_row(conn, device_id))


async def update_device(
    pool: asyncpg.Pool, logins: DeviceLogins, device_id: str, patch: DevicePatch
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
            raise device_not_found(device_id)
        if patch.enabled is not None:
            await logins.set_enabled(conn, device_id, enabled=patch.enabled)
    if patch.enabled is False:
        await logins.after_commit([device_id])
    log.info("device updated", device_id=device_id, fields=sorted(sent))
    return _device(row)


async def disable_device(pool: asyncpg.Pool, logins: DeviceLogins, device_id: str) -> Device:
    """Disable rather than delete: the device's readings and history stay queryable, and the
    broker disconnects it and refuses its login from now on."""
    return await update_device(pool, logins, device_id, DevicePatch(enabled=False))


async def devices_of(conn: Connection, kind: Kind, district: District | None) -> list[Device]:
    """Every device of a kind (in a district if given), enabled or not: history counts."""
    return [_device(row) for row in await repository.devices_of(conn, kind, district)]


async def silent_devices(
    conn: Connection,
    *,
    silent_for: timedelta,
    kind: str | None,
    district: str | None,
    device_id: str | None,
) -> list[str]:
    """Ids of enabled devices silent for longer than ``silent_for`` or whose Last Will said
    offline, among those the filters name."""
    rows = await repository.silent_devices(
        conn, silent_for=silent_for, kind=kind, district=district, device_id=device_id
    )
    return [row["device_id"] for row in rows]


async def broker_login(conn: Connection, device_id: str) -> asyncpg.Record | None:
    """Kind, enabled flag and secret digest of a device, for the broker's login checks."""
    return await repository.broker_login(conn, device_id)


async def record_presence(conn: Connection, updates: Sequence[Presence]) -> None:
    """Note what a batch said of its devices (seen now, online/offline), in its transaction."""
    await repository.record_presence(conn, updates)


class DeviceDirectory:
    """A replica's cached view of who may publish: the whole registry re-read every
    ``refresh_s``, an id it does not know looked up again at most every ``recheck_s`` (a device
    commissioned a moment ago is accepted at once, a stranger costs no query per message)."""

    def __init__(self, *, refresh_s: float, recheck_s: float) -> None:
        self._refresh_s = refresh_s
        self._recheck_s = recheck_s
        self._devices: dict[str, DeviceInfo] = {}
        self._loaded_at = float("-inf")
        self._checked_at: dict[str, float] = {}

    def get(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    async def reload(self, conn: Connection) -> dict[str, DeviceInfo]:
        """Read the whole registry now; returns the new view."""
        self._devices = {
            row["device_id"]: DeviceInfo(
                Kind(row["kind"]), District(row["district"]), row["enabled"]
            )
            for row in await repository.directory_rows(conn)
        }
        self._loaded_at = time.monotonic()
        self._checked_at.clear()
        return self._devices

    async def reload_if_due(self, conn: Connection) -> None:
        if time.monotonic() - self._loaded_at > self._refresh_s:
            await self.reload(conn)

    def due_for_lookup(self, device_ids: Iterable[str]) -> list[str]:
        """Those of ``device_ids`` unknown here and not looked up within ``recheck_s``."""
        now = time.monotonic()
        return [
            device_id
            for device_id in set(device_ids)
            if device_id not in self._devices
            and now - self._checked_at.get(device_id, float("-inf")) >= self._recheck_s
        ]

    async def look_up(self, conn: Connection, device_ids: Sequence[str]) -> None:
        """Ask the registry about ids this view does not know (see ``due_for_lookup``)."""
        if not device_ids:
            return
        now = time.monotonic()
        for device_id in device_ids:
            self._checked_at[device_id] = now
        for row in await repository.directory_rows(conn, device_ids):
            self._devices[row["device_id"]] = DeviceInfo(
                Kind(row["kind"]), District(row["district"]), row["enabled"]
            )
