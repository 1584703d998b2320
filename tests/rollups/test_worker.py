"""Ingest marks the minutes it touches; the worker rolls them up, one worker per kind at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from core.config import RollupSettings, Settings
from devices.contract import Kind, telemetry_topic
from ingest.app import RunningIngest
from rollups import repository
from rollups import service as rollups
from rollups.schemas import Tier
from tests.support import eventually, publish, register


async def dirty_minutes(pool: asyncpg.Pool, device_id: str) -> list[datetime]:
    rows = await pool.fetch(
        "SELECT minute FROM rollup_dirty WHERE device_id = $1 ORDER BY minute", device_id
    )
    return [row["minute"] for row in rows]


async def test_ingest_marks_minutes_dirty_in_the_same_transaction(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"dirty-{unique}"
    await register(db_pool, device, Kind.TRAFFIC)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    readings = [
        {"ts": (now - timedelta(minutes=3, seconds=s)).isoformat(), "vehicle_count": 4}
        for s in (5, 10, 70)
    ]
    await publish(
        ingest_settings, [(telemetry_topic(Kind.TRAFFIC, device), orjson.dumps(readings))]
    )
    minutes = await eventually(lambda: dirty_minutes(db_pool, device), lambda m: len(m) == 2)
    assert minutes == [now - timedelta(minutes=5), now - timedelta(minutes=4)]

    await rollups.roll_up(db_pool)
    assert await dirty_minutes(db_pool, device) == []
    hours = await db_pool.fetchrow(
        "SELECT sum(readings) AS n, sum(vehicle_count_sum) AS s FROM traffic_rollup_1h"
        " WHERE device_id = $1",
        device,
    )
    assert hours is not None
    assert (hours["n"], hours["s"]) == (3, 12)


async def test_a_kind_held_by_another_worker_is_left_alone(
    db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"locked-{unique}"
    await register(db_pool, device, Kind.AIR)
    await db_pool.execute(
        "INSERT INTO rollup_dirty (kind, device_id, minute) VALUES ('air', $1, $2)",
        device,
        datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
    )
    async with db_pool.acquire() as conn, conn.transaction():
        assert await repository.try_lock_kind(conn, Kind.AIR)
        assert await rollups.roll_up_kind(db_pool, Kind.AIR, 100) == 0
    assert len(await dirty_minutes(db_pool, device)) == 1
    await rollups.roll_up(db_pool)
    assert await dirty_minutes(db_pool, device) == []


async def test_concurrent_workers_do_not_collide(db_pool: asyncpg.Pool, unique: str) -> None:
    device = f"twins-{unique}"
    await register(db_pool, device, Kind.AIR)
    start = datetime(2025, 6, 2, tzinfo=UTC)
    await db_pool.executemany(
        "INSERT INTO air_readings (device_id, ts, pm10) VALUES ($1, $2, $3)",
        [(device, start + timedelta(seconds=37 * i), float(i)) for i in range(400)],
    )
    await db_pool.execute(
        "INSERT INTO rollup_dirty (kind, device_id, minute)"
        " SELECT DISTINCT 'air', device_id, time_bucket(INTERVAL '1 minute', ts)"
        " FROM air_readings WHERE device_id = $1",
        device,
    )
    await asyncio.gather(*(rollups.roll_up(db_pool, batch=10) for _ in range(3)))
    assert await dirty_minutes(db_pool, device) == []
    day = await db_pool.fetchrow(
        "SELECT sum(readings) AS n, sum(pm10_sum) AS s FROM air_rollup_1d WHERE device_id = $1",
        device,
    )
    assert day is not None
    assert (day["n"], day["s"]) == (400, sum(range(400)))


async def test_retention_keeps_what_is_young_and_the_edition_is_detected(
    db_pool: asyncpg.Pool,
) -> None:
    keep_all = RollupSettings(
        raw_retention_days=36_500, minute_retention_days=36_500, hour_retention_days=None
    )
    assert rollups.retention(keep_all)[Tier.HOUR] is None
    assert await rollups.apply_retention(db_pool, keep_all) == 0
    # The test run uses the Apache edition: no compression policies are attempted.
    assert await rollups.prepare(db_pool, keep_all) is False
