"""The district and city tiers hold, bucket for bucket, the sums over the area's devices computed
in Python from raw readings: after a roll-up, after late and redelivered readings and the
worker's pass over them, and after a device moves to another district. District and city
aggregates equal raw at every step, also while the worker has not caught up."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from devices.contract import District, Kind, readings_table
from rollups import service as rollups
from rollups.buckets import DAY, parse_bucket
from rollups.schemas import AREA_TIERS, Tier, area_table
from tests.api.conftest import insert_readings
from tests.rollups.reference import area_rows, from_raw, members_of
from tests.rollups.test_exactness import api_points, assert_same

# No other test writes 2023: the area rows of these days hold only this module's devices.
START = datetime(2023, 9, 29, 16, 0, tzinfo=UTC)  # 21:00 in Almaty; the month ends in between
END = datetime(2023, 10, 2, 2, 0, tzinfo=UTC)
STEP = timedelta(minutes=6, seconds=11)
FROM = START + timedelta(minutes=9, seconds=40)  # unaligned: the edges come from raw
TO = END - timedelta(minutes=13, seconds=7)
MOVE_START = datetime(2023, 11, 6, 18, 0, tzinfo=UTC)
AREAS = ("golden", "growing", "city")
METRICS = {
    Kind.TRAFFIC: ["vehicle_count", "interval_s", "avg_speed_kmh"],
    Kind.ENERGY: ["energy_kwh", "power_kw"],
    Kind.AIR: ["pm2_5", "no2"],
}
QUERIES = [
    (Kind.TRAFFIC, "vehicle_count", ["sum", "count", "rate", "max"]),
    (Kind.TRAFFIC, "avg_speed_kmh", ["avg", "min"]),
    (Kind.ENERGY, "energy_kwh", ["increase", "min"]),
    (Kind.ENERGY, "power_kw", ["avg", "sum"]),
    (Kind.AIR, "pm2_5", ["avg", "max", "count"]),
]
BUCKETS = ("15m", "1h", "3h", "1d", "1mo")
TIER_INTERVAL = {Tier.MINUTE: "1 minute", Tier.HOUR: "1 hour", Tier.DAY: "1 day"}


def readings(kind: Kind, seed: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ts, i, register = start + timedelta(seconds=seed * 13), 0, 500.0 + seed
    while ts < end:
        if kind is Kind.TRAFFIC:
            rows.append(
                {
                    "ts": ts,
                    "vehicle_count": (i * 5 + seed) % 31,
                    "interval_s": STEP.total_seconds(),
                    "avg_speed_kmh": None if i % 7 == seed else 25 + (i * 2.9) % 50,
                }
            )
        elif kind is Kind.ENERGY:
            # One meter resets; every eighth reading lacks the register.
            register = 0.3 if (seed == 1 and i == 250) else register + 0.2 + (i % 5) * 0.07
            rows.append(
                {
                    "ts": ts,
                    "energy_kwh": None if i % 8 == 3 else register,
                    "power_kw": 2.0 + (i % 9) * 0.25,
                }
            )
        else:
            rows.append({"ts": ts, "pm2_5": 4 + (i * 11 + seed) % 90, "no2": 20 + i % 13})
        ts, i = ts + STEP, i + 1
    return rows


async def redeliver(
    pool: asyncpg.Pool, kind: Kind, device_id: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """What ingest does with a redelivered batch: stores only readings it does not hold yet
    (identity: device, ts) and marks every minute it saw dirty."""
    for row in rows:
        columns = ("device_id", *row)
        values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await pool.execute(
            f"INSERT INTO {readings_table(kind)} ({', '.join(columns)}) VALUES ({values})"
            " ON CONFLICT (device_id, ts) DO NOTHING",
            device_id,
            *row.values(),
        )
    await pool.execute(
        "INSERT INTO rollup_dirty (kind, device_id, minute)"
        " SELECT DISTINCT $1, $2, time_bucket(INTERVAL '1 minute', ts)"
        " FROM unnest($3::timestamptz[]) AS t(ts) ON CONFLICT DO NOTHING",
        kind.value,
        device_id,
        [row["ts"] for row in rows],
    )


async def register_area_devices(
    pool: asyncpg.Pool, start: datetime, end: datetime
) -> dict[Kind, list[str]]:
    """Per kind two devices in golden, one in growing, with readings over [start, end)."""
    token = uuid.uuid4().hex[:8]
    devices: dict[Kind, list[str]] = {kind: [] for kind in Kind}
    for seed, district in enumerate((District.GOLDEN, District.GOLDEN, District.GROWING)):
        for kind in Kind:
            device_id = f"area-{kind.value}-{seed}-{token}"
            await pool.execute(
                "INSERT INTO devices (device_id, kind, district) VALUES ($1, $2, $3)",
                device_id,
                kind.value,
                district.value,
            )
            await insert_readings(pool, kind, device_id, readings(kind, seed, start, end))
            devices[kind].append(device_id)
    return devices


async def assert_area_tiers_equal_raw(
    pool: asyncpg.Pool, start: datetime, end: datetime, areas: Sequence[str], label: str
) -> None:
    lower, upper = DAY.floor(start), DAY.ceil(end)
    for kind in Kind:
        metrics = METRICS[kind]
        for tier in AREA_TIERS:
            for area in areas:
                want = await area_rows(
                    pool, kind, area, metrics, TIER_INTERVAL[tier], tier is Tier.DAY, lower, upper
                )
                columns = ["readings"]
                for metric in metrics:
                    columns += [f"{metric}_{part}" for part in ("n", "min", "max", "sum")]
                if kind is Kind.ENERGY:
                    columns.append("energy_kwh_increase")
                rows = await pool.fetch(
                    f"SELECT bucket, {', '.join(columns)} FROM {area_table(kind, tier)}"
                    " WHERE area = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
                    area,
                    lower,
                    upper,
                )
                where = f"{label} {kind.value} {tier.value} {area}"
                assert [row["bucket"] for row in rows] == sorted(want), where
                assert want, where
                for row in rows:
                    expected = want[row["bucket"]]
                    for column in columns:
                        value = expected.get(column)
                        if value is None:
                            assert row[column] is None, (where, row["bucket"], column)
                        else:
                            assert row[column] == pytest.approx(value, rel=1e-9, abs=1e-9), (
                                where,
                                row["bucket"],
                                column,
                            )


async def assert_area_answers_equal_raw(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    areas: Sequence[str],
    window: tuple[datetime, datetime],
    label: str,
) -> None:
    start, end = window
    for bucket in BUCKETS:
        width = parse_bucket(bucket)
        for kind, metric, fns in QUERIES:
            for area in areas:
                url = (
                    "/api/v1/city/aggregates"
                    if area == "city"
                    else f"/api/v1/districts/{area}/aggregates"
                )
                devices = await members_of(pool, kind, area)
                for fn in fns:
                    _, got = await api_points(client, url, metric, bucket, fn, start, end)
                    want = await from_raw(
                        pool,
                        kind,
                        metric,
                        fn,
                        devices,
                        width.interval,
                        width.city_calendar,
                        start,
                        end,
                    )
                    assert want, (label, area, bucket, metric, fn)
                    assert_same(got, want, f"{label} {area} {metric} {fn} {bucket}")


async def test_area_tiers_stay_exact_under_late_and_redelivered_readings(
    rollup_client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    devices = await register_area_devices(db_pool, START, END)
    await rollups.roll_up(db_pool)
    await assert_area_tiers_equal_raw(db_pool, START, END, AREAS, "rolled")
    await assert_area_answers_equal_raw(rollup_client, db_pool, AREAS, (FROM, TO), "rolled")

    # Late: between stored readings of a meter (changes the next reading's step), a reset in
    # the middle of a day, a count in an hour rolled up long ago; redelivered: a stored batch
    # again, one reading of it with other values (the first stored one stays).
    meter, counter, sensor = devices[Kind.ENERGY][0], devices[Kind.TRAFFIC][2], devices[Kind.AIR][1]
    middle = START + timedelta(days=1, hours=2, seconds=17)
    await insert_readings(
        db_pool,
        Kind.ENERGY,
        meter,
        [
            {"ts": middle, "energy_kwh": 2.0, "power_kw": 9.0},
            {"ts": middle + timedelta(seconds=40), "energy_kwh": 2.5},
            {"ts": START + timedelta(hours=7, seconds=3), "energy_kwh": 88_888.0},
        ],
    )
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        counter,
        [{"ts": START + timedelta(hours=3, seconds=1), "vehicle_count": 400, "interval_s": 60}],
    )
    stored = readings(Kind.AIR, 1, START, END)[40:60]
    stored[5] = stored[5] | {"pm2_5": 4999.0}
    await redeliver(db_pool, Kind.AIR, sensor, stored)
    await redeliver(db_pool, Kind.ENERGY, meter, readings(Kind.ENERGY, 0, START, END)[100:120])
    # Before the worker's pass the touched area buckets are read per device, from raw.
    await assert_area_answers_equal_raw(rollup_client, db_pool, AREAS, (FROM, TO), "dirty")
    await rollups.roll_up(db_pool)
    await assert_area_tiers_equal_raw(db_pool, START, END, AREAS, "re-rolled")
    await assert_area_answers_equal_raw(rollup_client, db_pool, AREAS, (FROM, TO), "re-rolled")


async def test_a_device_moving_district_takes_its_history_along(
    rollup_client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    start, end = MOVE_START, MOVE_START + timedelta(days=1, hours=7)
    window = (start + timedelta(minutes=3), end - timedelta(minutes=21))
    devices = await register_area_devices(db_pool, start, end)
    await rollups.roll_up(db_pool)
    moved = [ids[0] for ids in devices.values()]
    await db_pool.execute(
        "UPDATE devices SET district = 'gate' WHERE device_id = ANY($1::text[])", moved
    )
    areas = ("golden", "gate", "city")
    # Until the worker re-derives the areas, their answers come from the device tiers.
    await assert_area_answers_equal_raw(rollup_client, db_pool, areas, window, "moved")
    await rollups.roll_up(db_pool)
    assert await db_pool.fetchval("SELECT count(*) FROM rollup_area_moves") == 0
    await assert_area_tiers_equal_raw(db_pool, start, end, areas, "moved, re-derived")
    await assert_area_answers_equal_raw(rollup_client, db_pool, areas, window, "re-derived")


async def test_backfill_areas_derives_the_area_tiers_from_the_device_tiers(
    db_pool: asyncpg.Pool,
) -> None:
    start = datetime(2023, 12, 11, 19, 0, tzinfo=UTC)  # Almaty midnight
    end = start + timedelta(days=2)
    await register_area_devices(db_pool, start, end)
    await rollups.roll_up(db_pool)
    for kind in Kind:
        for tier in AREA_TIERS:
            await db_pool.execute(
                f"DELETE FROM {area_table(kind, tier)} WHERE bucket >= $1 AND bucket < $2",
                start,
                end,
            )
    await rollups.backfill_areas(db_pool, start, end)
    await assert_area_tiers_equal_raw(db_pool, start, end, AREAS, "backfilled")


async def test_wide_area_answers_are_read_from_the_area_tier(
    rollup_client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    """Proof of the path: a district's day answer follows its area row (tampered with here,
    then re-derived), not the devices' rows."""
    start = DAY.floor(datetime(2023, 6, 6, 12, 0, tzinfo=UTC))
    end = start + timedelta(days=2)
    await register_area_devices(db_pool, start, end)
    await rollups.roll_up(db_pool)
    assert await db_pool.fetchval("SELECT count(*) FROM rollup_area_moves") == 0
    url = "/api/v1/districts/golden/aggregates"
    _, honest = await api_points(rollup_client, url, "pm2_5", "1d", "sum", start, end)
    want = await from_raw(
        db_pool, Kind.AIR, "pm2_5", "sum", await members_of(db_pool, Kind.AIR, "golden"),
        "1 day", True, start, end,
    )  # fmt: skip
    assert_same(honest, want, "honest")
    await db_pool.execute(
        "UPDATE air_area_rollup_1d SET pm2_5_sum = pm2_5_sum * 2"
        " WHERE area = 'golden' AND bucket >= $1 AND bucket < $2",
        start,
        end,
    )
    _, tampered = await api_points(rollup_client, url, "pm2_5", "1d", "sum", start, end)
    assert_same(tampered, [(b, n, 2 * v) for b, n, v in want], "tampered")
    await rollups.backfill_areas(db_pool, start, end)
    _, restored = await api_points(rollup_client, url, "pm2_5", "1d", "sum", start, end)
    assert_same(restored, want, "restored")
