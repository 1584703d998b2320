"""The district and city summaries equal the same KPIs computed here in Python straight from
raw readings: after a roll-up, and while late readings wait for the worker. Roads carry their
configured free-flow speed (the learned one is tested in tests/api/test_city.py)."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api.aqi import POLLUTANTS
from devices.contract import District, Kind, readings_table
from rollups import service as rollups
from rollups.buckets import DAY
from tests.api.conftest import insert_readings
from tests.rollups.reference import members_of

AT = datetime(2023, 8, 15, 10, 17, 23, tzinfo=UTC)  # unaligned; no other test writes 2023-08
SINCE = AT - timedelta(days=8)
STEP = timedelta(minutes=9, seconds=7)


def rows_of(kind: Kind, seed: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ts, i, register = start + timedelta(seconds=17 * seed), 0, 100.0 * (seed + 1)
    while ts < end:
        if kind is Kind.AIR:
            rows.append(
                {
                    "ts": ts,
                    "pm2_5": 3 + (i * 7 + seed) % 60,
                    "pm10": 10 + (i * 5) % 150,
                    "o3": 40 + (i + seed) % 90,
                    "co": 500 + (i * 37) % 4000,
                    "no2": None if i % 6 == seed else 15 + (i * 3) % 120,
                    "so2": 5 + i % 40,
                }
            )
        elif kind is Kind.TRAFFIC:
            rows.append(
                {
                    "ts": ts,
                    "vehicle_count": (i * 3 + seed) % 40,
                    "interval_s": STEP.total_seconds(),
                    "avg_speed_kmh": 20 + (i * 4.3 + seed * 9) % 55,
                }
            )
        else:
            register = 0.5 if (seed == 0 and i == 1150) else register + 0.3 + (i % 4) * 0.1
            rows.append(
                {
                    "ts": ts,
                    "energy_kwh": None if i % 10 == 7 else register,
                    "power_kw": 1.5 + ((i + seed) % 13) * 0.4,
                }
            )
        ts, i = ts + STEP, i + 1
    return rows


async def raw(
    pool: asyncpg.Pool, kind: Kind, area: str, metric: str, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"SELECT device_id, ts, {metric} AS v FROM {readings_table(kind)}"
        " WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3 AND"
        f" {metric} IS NOT NULL ORDER BY device_id, ts",
        await members_of(pool, kind, area),
        start,
        end,
    )


async def mean_of(
    pool: asyncpg.Pool, kind: Kind, area: str, metric: str, window: timedelta
) -> float | None:
    values = [row["v"] for row in await raw(pool, kind, area, metric, AT - window, AT)]
    return statistics.fmean(values) if values else None


def free_flow_of(device_id: str) -> float:
    """The free-flow speed each test road is commissioned with (its metadata)."""
    return 50.0 + 7.0 * int(device_id.split("-")[2])


async def expected_kpis(pool: asyncpg.Pool, area: str) -> dict[str, Any]:
    """The summary's numbers computed from raw readings alone."""
    kpis: dict[str, Any] = {}
    for pollutant in POLLUTANTS:
        kpis[pollutant.metric] = await mean_of(
            pool, Kind.AIR, area, pollutant.metric, pollutant.window
        )
    kpis["avg_speed_kmh"] = await mean_of(
        pool, Kind.TRAFFIC, area, "avg_speed_kmh", timedelta(minutes=15)
    )
    # Each road's configured free-flow speed, weighted by its speed readings of the last 15 min.
    speeds: dict[str, int] = {}
    for row in await raw(pool, Kind.TRAFFIC, area, "avg_speed_kmh", AT - timedelta(minutes=15), AT):
        speeds[row["device_id"]] = speeds.get(row["device_id"], 0) + 1
    weight = sum(speeds.values())
    kpis["free_flow_kmh"] = (
        sum(free_flow_of(device_id) * n for device_id, n in speeds.items()) / weight
        if weight
        else None
    )
    # The area's flow: each detector's vehicles over its counting time in the last hour, summed.
    hour = AT - timedelta(hours=1)
    counted: dict[str, float] = {}
    for row in await raw(pool, Kind.TRAFFIC, area, "vehicle_count", hour, AT):
        counted[row["device_id"]] = counted.get(row["device_id"], 0.0) + row["v"]
    seconds: dict[str, float] = {}
    for row in await raw(pool, Kind.TRAFFIC, area, "interval_s", hour, AT):
        seconds[row["device_id"]] = seconds.get(row["device_id"], 0.0) + row["v"]
    rates = [n * 3600 / seconds[d] for d, n in counted.items() if seconds.get(d)]
    kpis["vehicles_per_hour"] = sum(rates) if rates else None
    power: dict[str, list[float]] = {}
    for row in await raw(pool, Kind.ENERGY, area, "power_kw", AT - timedelta(minutes=15), AT):
        power.setdefault(row["device_id"], []).append(row["v"])
    kpis["load_kw"] = sum(statistics.fmean(v) for v in power.values()) if power else None
    midnight = DAY.floor(AT)
    consumed, seen = 0.0, False
    previous: dict[str, float] = {}
    for row in await raw(
        pool, Kind.ENERGY, area, "energy_kwh", datetime.min.replace(tzinfo=UTC), AT
    ):
        prev = previous.get(row["device_id"])
        previous[row["device_id"]] = row["v"]
        if row["ts"] >= midnight:
            seen = True
            if prev is not None:
                consumed += row["v"] - prev if row["v"] >= prev else row["v"]
    kpis["consumption_today_kwh"] = consumed if seen else None
    return kpis


def assert_summary(body: dict[str, Any], want: dict[str, Any], label: str) -> None:
    got: dict[str, Any] = {
        p.metric: body["air"]["pollutants"].get(p.metric, {}).get("average") for p in POLLUTANTS
    }
    got |= {name: body["traffic"][name] for name in ("avg_speed_kmh", "free_flow_kmh")}
    got["vehicles_per_hour"] = body["traffic"]["vehicles_per_hour"]
    got |= {name: body["energy"][name] for name in ("load_kw", "consumption_today_kwh")}
    assert set(got) == set(want)
    for name, expected in want.items():
        assert expected is not None, (label, name)  # the data covers every KPI
        assert got[name] == pytest.approx(expected, rel=1e-9, abs=1e-9), (label, name)
    sub_indexes = {p.metric: p.sub_index(want[p.metric]) for p in POLLUTANTS}
    assert body["air"]["aqi"] == max(sub_indexes.values()), label


async def assert_summaries_equal_raw(
    client: httpx.AsyncClient, pool: asyncpg.Pool, label: str
) -> None:
    city = await client.get("/api/v1/city/summary", params={"at": AT.isoformat()})
    assert city.status_code == 200, city.text
    body = city.json()
    assert_summary(body, await expected_kpis(pool, "city"), f"{label} city")
    for district in body["districts"]:
        if district["district"] in ("golden", "growing"):
            want = await expected_kpis(pool, district["district"])
            assert_summary(district, want, f"{label} city/{district['district']}")
    for name in ("golden", "growing"):
        response = await client.get(
            f"/api/v1/districts/{name}/summary", params={"at": AT.isoformat()}
        )
        assert response.status_code == 200, response.text
        assert_summary(response.json(), await expected_kpis(pool, name), f"{label} {name}")


async def test_summaries_equal_the_kpis_computed_from_raw(
    rollup_client: httpx.AsyncClient, db_pool: asyncpg.Pool
) -> None:
    token = uuid.uuid4().hex[:8]
    devices: dict[Kind, list[str]] = {kind: [] for kind in Kind}
    for seed, district in enumerate((District.GOLDEN, District.GOLDEN, District.GROWING)):
        for kind in Kind:
            device_id = f"kpi-{kind.value}-{seed}-{token}"
            metadata = {"free_flow_kmh": free_flow_of(device_id)} if kind is Kind.TRAFFIC else {}
            await db_pool.execute(
                "INSERT INTO devices (device_id, kind, district, metadata)"
                " VALUES ($1, $2, $3, $4::jsonb)",
                device_id,
                kind.value,
                district.value,
                metadata,
            )
            await insert_readings(db_pool, kind, device_id, rows_of(kind, seed, SINCE, AT))
            devices[kind].append(device_id)
    await rollups.roll_up(db_pool)
    await assert_summaries_equal_raw(rollup_client, db_pool, "rolled")

    # Late readings inside every KPI's window (and a meter reset this morning), not rolled up.
    late = AT - timedelta(hours=3, minutes=1, seconds=4)
    await insert_readings(
        db_pool,
        Kind.AIR,
        devices[Kind.AIR][2],
        [{"ts": late, "pm2_5": 333.0, "co": 9000.0, "no2": 700.0, "so2": 1.0}],
    )
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        devices[Kind.TRAFFIC][0],
        [
            {"ts": AT - timedelta(minutes=4), "vehicle_count": 90, "avg_speed_kmh": 3.0},
            {"ts": AT - timedelta(days=2, seconds=5), "avg_speed_kmh": 240.0},
        ],
    )
    await insert_readings(
        db_pool, Kind.ENERGY, devices[Kind.ENERGY][1], [{"ts": late, "energy_kwh": 1.0}]
    )
    await assert_summaries_equal_raw(rollup_client, db_pool, "dirty")
    await rollups.roll_up(db_pool)
    await assert_summaries_equal_raw(rollup_client, db_pool, "re-rolled")
