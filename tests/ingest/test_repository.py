"""ingest's storage on its own: new rows go straight into the hypertable, a batch holding a
stored key falls back to the deduplicating path, and both mark the minutes for the rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import asyncpg

from devices import repository as devices_repository
from devices.contract import Kind
from devices.schemas import Presence
from ingest import repository
from tests.support import register

START = datetime(2026, 11, 20, 8, 0, 30, tzinfo=UTC)


def rows(device_id: str, minutes: range) -> list[tuple[object, ...]]:
    received = datetime.now(UTC)
    return [
        (device_id, START + timedelta(minutes=m), received, 10 + m, 1.0, None, None, None)
        for m in minutes
    ]


async def dirty_minutes(pool: asyncpg.Pool, device_id: str) -> list[datetime]:
    records = await pool.fetch(
        "SELECT minute FROM rollup_dirty WHERE kind = 'traffic' AND device_id = $1 ORDER BY 1",
        device_id,
    )
    return [record["minute"] for record in records]


async def store(pool: asyncpg.Pool, batch: list[tuple[object, ...]]) -> int:
    async with pool.acquire() as conn:
        await repository.prepare_connection(conn)
        async with conn.transaction():
            return (await repository.store_readings(conn, Kind.TRAFFIC, batch)).inserted


async def test_new_rows_and_a_batch_with_stored_keys_each_store_only_what_is_new(
    db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"repo-{unique}"
    await register(db_pool, device_id, Kind.TRAFFIC)
    assert await store(db_pool, rows(device_id, range(3))) == 3  # all new: the COPY path
    # Minutes 1 and 2 again with 3 and 4: the fallback inserts only the two new ones.
    assert await store(db_pool, rows(device_id, range(1, 5))) == 2
    stored = await db_pool.fetch(
        "SELECT ts, vehicle_count FROM traffic_readings WHERE device_id = $1 ORDER BY ts",
        device_id,
    )
    assert [(r["ts"], r["vehicle_count"]) for r in stored] == [
        (START + timedelta(minutes=m), 10 + m) for m in range(5)
    ]
    whole = START.replace(second=0)
    assert await dirty_minutes(db_pool, device_id) == [
        whole + timedelta(minutes=m) for m in range(5)
    ]


async def test_a_key_repeated_inside_one_batch_is_stored_once(
    db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"repo-{unique}-twice"
    await register(db_pool, device_id, Kind.TRAFFIC)
    batch = rows(device_id, range(2))
    assert await store(db_pool, [*batch, batch[0]]) == 2


async def test_minutes_are_marked_in_utc_whatever_the_offset(
    db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"repo-{unique}-tz"
    await register(db_pool, device_id, Kind.TRAFFIC)
    almaty = timezone(timedelta(hours=5))
    received = datetime.now(UTC)
    batch: list[tuple[object, ...]] = [
        (device_id, START.astimezone(almaty), received, 1, 1.0, None, None, None),
        (device_id, START + timedelta(seconds=20), received, 2, 1.0, None, None, None),
    ]
    assert await store(db_pool, batch) == 2
    assert await dirty_minutes(db_pool, device_id) == [START.replace(second=0)]


async def test_a_status_received_earlier_never_replaces_a_newer_one(
    db_pool: asyncpg.Pool, unique: str
) -> None:
    """Two batches in flight commit in either order: the device's offline, received after its
    online, must stay even when the online's batch commits last."""
    device_id = f"presence-{unique}"
    await register(db_pool, device_id, Kind.TRAFFIC)
    online_at = datetime.now(UTC)
    offline_at = online_at + timedelta(milliseconds=5)

    async def record(status: str, at: datetime, seen: bool = False) -> asyncpg.Record:
        async with db_pool.acquire() as conn:
            await devices_repository.record_presence(
                conn, [Presence(device_id, Kind.TRAFFIC, seen, status, at)]
            )
        row = await db_pool.fetchrow(
            "SELECT status, status_at, last_seen FROM devices WHERE device_id = $1", device_id
        )
        assert row is not None
        return row

    assert (await record("offline", offline_at))["status"] == "offline"
    late = await record("online", online_at, seen=True)
    assert (late["status"], late["status_at"]) == ("offline", offline_at)
    assert late["last_seen"] is not None  # the late batch's readings still count as seen
    later = await record("online", offline_at + timedelta(seconds=1))
    assert later["status"] == "online"


async def latest_of(pool: asyncpg.Pool, device_id: str) -> tuple[datetime, int]:
    row = await pool.fetchrow(
        "SELECT ts, vehicle_count FROM traffic_latest WHERE device_id = $1", device_id
    )
    assert row is not None
    return row["ts"], row["vehicle_count"]


async def newest_in_raw(pool: asyncpg.Pool, device_id: str) -> tuple[datetime, int]:
    row = await pool.fetchrow(
        "SELECT ts, vehicle_count FROM traffic_readings WHERE device_id = $1"
        " ORDER BY ts DESC LIMIT 1",
        device_id,
    )
    assert row is not None
    return row["ts"], row["vehicle_count"]


async def test_latest_is_the_newest_stored_reading_and_late_data_never_replaces_it(
    db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"repo-{unique}-latest"
    await register(db_pool, device_id, Kind.TRAFFIC)
    minute = timedelta(minutes=1)
    assert await store(db_pool, rows(device_id, range(5, 6))) == 1
    assert await latest_of(db_pool, device_id) == (START + 5 * minute, 15)
    # Late readings, on the COPY path: older than the latest, so it stays.
    assert await store(db_pool, rows(device_id, range(3))) == 3
    assert await latest_of(db_pool, device_id) == (START + 5 * minute, 15)
    # A redelivery of the latest with other values, beside a late minute (the deduplicating
    # path): raw keeps the first copy, and so does the latest.
    redelivered = [(device_id, START + 5 * minute, datetime.now(UTC), 999, 1.0, None, None, None)]
    assert await store(db_pool, redelivered + rows(device_id, range(3, 4))) == 1
    assert await latest_of(db_pool, device_id) == (START + 5 * minute, 15)
    # A newer reading replaces it, wherever it sits in its batch.
    assert await store(db_pool, rows(device_id, range(8, 9)) + rows(device_id, range(7, 8))) == 2
    assert await latest_of(db_pool, device_id) == (START + 8 * minute, 18)
    assert await latest_of(db_pool, device_id) == await newest_in_raw(db_pool, device_id)
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM traffic_latest WHERE device_id = $1", device_id
        )
        == 1
    )
