"""Every tier and every bucket size agree with the same aggregate computed straight from raw
readings: after a roll-up, while late readings wait for one, and across a meter reset."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from devices.contract import District, Kind
from rollups import service as rollups
from rollups.buckets import parse_bucket
from rollups.schemas import Tier, rollup_table
from tests.api.conftest import insert_readings, parse_ts
from tests.rollups.reference import Point, from_raw
from tests.support import register

START = datetime(2025, 1, 30, 17, 0, tzinfo=UTC)  # 22:00 in Almaty; the month ends in between
END = datetime(2025, 2, 2, 3, 0, tzinfo=UTC)
STEP = timedelta(minutes=4, seconds=17)
FROM = START + timedelta(minutes=7, seconds=30)  # unaligned: range edges are read from raw
TO = END - timedelta(minutes=11, seconds=13)
EXPECTED_TIER = {
    "45s": "raw",
    "1m": "1m",
    "5m": "1m",
    "15m": "1m",
    "1h": "1h",
    "3h": "1h",
    "1d": "1d",
    "7d": "1d",
    "1mo": "1d",
}
QUERIES = [
    (Kind.TRAFFIC, "vehicle_count", ["avg", "min", "max", "sum", "count", "rate"]),
    (Kind.TRAFFIC, "avg_speed_kmh", ["avg", "min", "max", "count"]),
    (Kind.ENERGY, "energy_kwh", ["increase", "max"]),
    (Kind.ENERGY, "power_kw", ["avg", "sum"]),
    (Kind.AIR, "pm2_5", ["avg", "max"]),
]


def traffic_rows(seed: int) -> list[dict[str, Any]]:
    rows, ts, i = [], START, 0
    while ts < END:
        rows.append(
            {
                "ts": ts,
                "vehicle_count": (i * 7 + seed) % 23,
                "interval_s": STEP.total_seconds(),
                "avg_speed_kmh": None if i % 5 == seed % 5 else 20 + (i * 3.7) % 60,
            }
        )
        ts, i = ts + STEP + timedelta(seconds=seed), i + 1
    return rows


def energy_rows(reset_at: int | None) -> list[dict[str, Any]]:
    rows, ts, i, register_kwh = [], START, 0, 1000.0
    while ts < END:
        register_kwh = 0.4 if i == reset_at else register_kwh + 0.1 + (i % 7) * 0.05
        rows.append(
            {
                "ts": ts,
                # Every ninth reading lacks the register: it counts, it does not break increase.
                "energy_kwh": None if i % 9 == 4 else register_kwh,
                "power_kw": 3.0 + (i % 11) * 0.5,
            }
        )
        ts, i = ts + STEP, i + 1
    return rows


def air_rows() -> list[dict[str, Any]]:
    rows, ts, i = [], START, 0
    while ts < END:
        rows.append({"ts": ts, "pm2_5": 5 + (i * 13) % 140, "pm10": 10 + (i * 17) % 200})
        ts, i = ts + STEP, i + 1
    return rows


@pytest.fixture(scope="module")
async def city(db_pool: asyncpg.Pool) -> dict[Kind, list[str]]:
    """Two devices of each kind in the green district, rolled up; one meter resets."""
    token = uuid.uuid4().hex[:10]
    devices: dict[Kind, list[str]] = {kind: [] for kind in Kind}
    for n in range(2):
        for kind in Kind:
            device_id = f"roll-{kind.value}-{n}-{token}"
            await register(db_pool, device_id, kind, District.GREEN)
            devices[kind].append(device_id)
        await insert_readings(db_pool, Kind.TRAFFIC, devices[Kind.TRAFFIC][n], traffic_rows(n))
        rows = energy_rows(reset_at=300 if n == 0 else None)
        await insert_readings(db_pool, Kind.ENERGY, devices[Kind.ENERGY][n], rows)
        await insert_readings(db_pool, Kind.AIR, devices[Kind.AIR][n], air_rows())
    await rollups.roll_up(db_pool)
    all_ids = [device_id for ids in devices.values() for device_id in ids]
    left = await db_pool.fetchval(
        "SELECT count(*) FROM rollup_dirty WHERE device_id = ANY($1::text[])", all_ids
    )
    assert left == 0
    return devices


async def api_points(
    client: httpx.AsyncClient,
    url: str,
    metric: str,
    bucket: str,
    fn: str,
    start: datetime = FROM,
    end: datetime = TO,
) -> tuple[str, list[Point]]:
    params = {"metric": metric, "bucket": bucket, "fn": fn}
    response = await client.get(
        url, params=params | {"from": start.isoformat(), "to": end.isoformat()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    points = [(parse_ts(i["bucket_start"]), i["count"], i["value"]) for i in body["items"]]
    return body["tier"], points


def assert_same(got: list[Point], want: list[Point], label: str) -> None:
    assert [(g[0], g[1]) for g in got] == [(w[0], w[1]) for w in want], label
    for (start, _, value), (_, _, expected) in zip(got, want, strict=True):
        if expected is None:
            assert value is None, (label, start)
        else:
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), (label, start)


async def green_devices(pool: asyncpg.Pool, kind: Kind) -> list[str]:
    rows = await pool.fetch(
        "SELECT device_id FROM devices WHERE kind = $1 AND district = 'green'", kind.value
    )
    return [row["device_id"] for row in rows]


@pytest.mark.parametrize("bucket", list(EXPECTED_TIER))
async def test_every_bucket_size_equals_raw(
    rollup_client: httpx.AsyncClient,
    db_pool: asyncpg.Pool,
    city: dict[Kind, list[str]],
    bucket: str,
) -> None:
    width = parse_bucket(bucket)
    for kind, metric, fns in QUERIES:
        device_id = city[kind][0]
        district = await green_devices(db_pool, kind)
        for fn in fns:
            for url, devices in (
                (f"/api/v1/devices/{device_id}/aggregates", [device_id]),
                ("/api/v1/districts/green/aggregates", district),
            ):
                tier, got = await api_points(rollup_client, url, metric, bucket, fn)
                assert tier == EXPECTED_TIER[bucket]
                want = await from_raw(
                    db_pool,
                    kind,
                    metric,
                    fn,
                    devices,
                    width.interval,
                    width.city_calendar,
                    FROM,
                    TO,
                )
                assert want, (bucket, metric, fn)
                assert_same(got, want, f"{url} {metric} {fn} {bucket}")


@pytest.mark.parametrize("tier", [Tier.MINUTE, Tier.HOUR, Tier.DAY])
async def test_tier_tables_equal_raw(
    db_pool: asyncpg.Pool, city: dict[Kind, list[str]], tier: Tier
) -> None:
    interval = {Tier.MINUTE: "1 minute", Tier.HOUR: "1 hour", Tier.DAY: "1 day"}[tier]
    for kind, metric, fn in (
        (Kind.TRAFFIC, "vehicle_count", "sum"),
        (Kind.TRAFFIC, "avg_speed_kmh", "min"),
        (Kind.ENERGY, "energy_kwh", "max"),
        (Kind.AIR, "pm2_5", "count"),
    ):
        device_id = city[kind][1]
        column = {"sum": "_sum", "min": "_min", "max": "_max", "count": "_n"}[fn]
        rows = await db_pool.fetch(
            f"SELECT bucket, readings, {metric}{column} AS v FROM {rollup_table(kind, tier)}"
            " WHERE device_id = $1 ORDER BY bucket",
            device_id,
        )
        got = [(r["bucket"], r["readings"], r["v"]) for r in rows]
        want = await from_raw(
            db_pool,
            kind,
            metric,
            fn,
            [device_id],
            interval,
            tier is Tier.DAY,
            START - timedelta(days=1),
            END + timedelta(days=1),
        )
        assert want
        assert_same(got, want, f"{tier} {metric}")


async def test_late_readings_and_a_meter_reset_stay_exact(
    rollup_client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    """Before the worker has seen late readings the dirty buckets come from raw; after it has,
    from the recomputed tiers. Both equal raw, including the increase across a new reset."""
    meter, counter = f"late-energy-{unique}", f"late-traffic-{unique}"
    await register(db_pool, meter, Kind.ENERGY, District.GATE)
    await register(db_pool, counter, Kind.TRAFFIC, District.GATE)
    await insert_readings(db_pool, Kind.ENERGY, meter, energy_rows(reset_at=None))
    await insert_readings(db_pool, Kind.TRAFFIC, counter, traffic_rows(3))
    await rollups.roll_up(db_pool)

    # Out of order: between existing readings (changes the next reading's increase), a meter
    # reset in the middle of a day, and traffic readings in buckets already rolled up.
    middle = START + timedelta(days=1, hours=3, seconds=11)
    await insert_readings(
        db_pool,
        Kind.ENERGY,
        meter,
        [
            {"ts": middle, "energy_kwh": 5.0, "power_kw": 1.0},
            {"ts": middle + timedelta(seconds=30), "energy_kwh": 5.5, "power_kw": 1.0},
            {"ts": START + timedelta(hours=30, seconds=1), "energy_kwh": 99_999.0},
        ],
    )
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        counter,
        [
            {"ts": START + timedelta(hours=5, seconds=2), "vehicle_count": 500, "interval_s": 60},
            {"ts": START + timedelta(days=2, seconds=3), "vehicle_count": 7, "interval_s": 60},
        ],
    )
    for rolled in (False, True):
        if rolled:
            await rollups.roll_up(db_pool)
        for bucket in ("1m", "15m", "1h", "1d", "1mo"):
            width = parse_bucket(bucket)
            for kind, device_id, metric, fn in (
                (Kind.ENERGY, meter, "energy_kwh", "increase"),
                (Kind.ENERGY, meter, "energy_kwh", "min"),
                (Kind.TRAFFIC, counter, "vehicle_count", "sum"),
                (Kind.TRAFFIC, counter, "vehicle_count", "rate"),
            ):
                url = f"/api/v1/devices/{device_id}/aggregates"
                tier, got = await api_points(rollup_client, url, metric, bucket, fn)
                assert tier == EXPECTED_TIER[bucket]
                want = await from_raw(
                    db_pool,
                    kind,
                    metric,
                    fn,
                    [device_id],
                    width.interval,
                    width.city_calendar,
                    FROM,
                    TO,
                )
                assert_same(got, want, f"rolled={rolled} {metric} {fn} {bucket}")
    # The day of the reset consumed what the register says, not a negative amount.
    _, days = await api_points(
        rollup_client, f"/api/v1/devices/{meter}/aggregates", "energy_kwh", "1d", "increase"
    )
    assert all(value is None or value >= 0 for _, _, value in days)
