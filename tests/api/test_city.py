"""District and city aggregates, gap filling, completeness, and the KPI summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from devices.contract import District, Kind
from rollups import service as rollups
from tests.api.conftest import insert_readings, parse_ts
from tests.support import register

AT = datetime(2024, 7, 10, 12, 0, tzinfo=UTC)  # 17:00 in Almaty; no other test writes July 2024


async def expected_readings(
    pool: asyncpg.Pool, kind: Kind, district: District, seconds: float, *, with_key: str = ""
) -> float:
    """Readings the district's devices of a kind (those with ``with_key`` in their metadata,
    if given) should send in ``seconds``: each device's metadata.expected_interval_s, else the
    default 60 s (what coverage counts against)."""
    intervals = await pool.fetch(
        "SELECT metadata->>'expected_interval_s' AS interval FROM devices"
        " WHERE kind = $1 AND district = $2 AND ($3 = '' OR metadata ? $3)",
        kind.value,
        district.value,
        with_key,
    )
    return sum(seconds / float(row["interval"] or 60) for row in intervals)


async def test_gaps_are_filled_on_request_and_completeness_uses_the_expected_rate(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"gaps-{unique}"
    await db_pool.execute(
        "INSERT INTO devices (device_id, kind, district, metadata) VALUES ($1, 'air', 'gate', $2)",
        device_id,
        {"expected_interval_s": 60},
    )
    start = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    minutes = [*range(10), *range(15, 18)]
    rows = [{"ts": start + timedelta(minutes=m, seconds=5), "pm10": 20.0} for m in minutes]
    await insert_readings(db_pool, Kind.AIR, device_id, rows)
    params = {"metric": "pm10", "bucket": "5m", "fn": "count"}
    params |= {"from": start.isoformat(), "to": (start + timedelta(minutes=25)).isoformat()}
    url = f"/api/v1/devices/{device_id}/aggregates"
    sparse = (await client.get(url, params=params)).json()["items"]
    assert [(i["count"], i["completeness"], i["gap"]) for i in sparse] == [
        (5, 1.0, False),
        (5, 1.0, False),
        (3, 0.6, False),
    ]
    filled = (await client.get(url, params=params | {"fill": "true"})).json()["items"]
    assert [(i["count"], i["value"], i["gap"]) for i in filled] == [
        (5, 5, False),
        (5, 5, False),
        (0, None, True),
        (3, 3, False),
        (0, None, True),
    ]
    assert parse_ts(filled[2]["bucket_start"]) == start + timedelta(minutes=10)


async def test_city_aggregates_cover_every_device_of_the_kind(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    start = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
    for n, district in enumerate((District.GATE, District.GROWING)):
        device_id = f"citywide-{n}-{unique}"
        await register(db_pool, device_id, Kind.AIR, district)
        await insert_readings(
            db_pool, Kind.AIR, device_id, [{"ts": start + timedelta(minutes=1), "so2": 10.0 * n}]
        )
    params = {"metric": "so2", "bucket": "1h", "fn": "count"}
    params |= {"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()}
    city = (await client.get("/api/v1/city/aggregates", params=params)).json()
    assert city["scope"] == "city"
    assert city["kind"] == "air"
    assert [i["value"] for i in city["items"]] == [2]
    growing = (await client.get("/api/v1/districts/growing/aggregates", params=params)).json()
    assert [i["value"] for i in growing["items"]] == [1]


async def test_fn_must_suit_the_metric(client: httpx.AsyncClient) -> None:
    for metric, fn in (("pm10", "increase"), ("power_kw", "rate"), ("ghost", "avg")):
        response = await client.get(
            "/api/v1/city/aggregates", params={"metric": metric, "bucket": "1h", "fn": fn}
        )
        assert response.status_code == 422
        assert response.json()["error"] in {"invalid_fn", "unknown_metric"}


async def check_windows(db_pool: asyncpg.Pool, district: District, body: dict[str, Any]) -> None:
    """The district summary's traffic figures and every figure's window and coverage."""
    # 120 readings in 20 hours: the 24 h figure says it covers 120 of the 144 this device
    # should have sent (fewer still if other tests registered air devices in the district).
    air_day = await expected_readings(db_pool, Kind.AIR, district, 86400)
    assert body["air"]["windows"]["aqi"] == {
        "start": "2024-07-09T12:00:00.000000Z",
        "end": "2024-07-10T12:00:00.000000Z",
        "seconds": 86400.0,
        "coverage": round(120 / air_day, 4),
    }
    assert air_day >= 144
    assert body["air"]["pollutants"]["no2"]["window"]["seconds"] == 3600.0
    air_hour = await expected_readings(db_pool, Kind.AIR, district, 3600)
    assert body["air"]["pollutants"]["no2"]["window"]["coverage"] == round(6 / air_hour, 4)
    traffic = body["traffic"]
    assert traffic["free_flow_kmh"] == 60.0
    assert traffic["avg_speed_kmh"] == 60.0  # (30 + 90) / 2: both roads
    assert traffic["congestion"] == 0.5  # only the road with a free-flow speed: 1 - 30 / 60
    assert traffic["congestion_devices"] == 1
    assert traffic["vehicles_per_hour"] == 60
    # In 15 minutes each of these roads is expected to read 1.5 times; congestion counts only
    # the roads with a free-flow speed (of this test's, only one: 1 reading of 1.5; other
    # tests' roads in the district may carry one too, and none learns one from July 2024).
    roads = await expected_readings(db_pool, Kind.TRAFFIC, district, 900)
    assert traffic["windows"]["avg_speed_kmh"]["coverage"] == round(2 / roads, 4)
    referenced = await expected_readings(
        db_pool, Kind.TRAFFIC, district, 900, with_key="free_flow_kmh"
    )
    assert referenced >= 1.5
    assert traffic["windows"]["congestion"]["coverage"] == round(1 / referenced, 4)
    assert traffic["windows"]["vehicles_per_hour"]["seconds"] == 3600.0
    hour = await expected_readings(db_pool, Kind.TRAFFIC, district, 3600)
    assert traffic["windows"]["vehicles_per_hour"]["coverage"] == round(6 / hour, 4)
    energy_windows = body["energy"]["windows"]
    assert energy_windows["load_kw"]["seconds"] == 900.0
    assert energy_windows["consumption_today_kwh"]["start"] == "2024-07-09T19:00:00.000000Z"
    assert body["energy"]["load_kw"] == 5.0


async def test_district_summary_computes_aqi_congestion_and_energy_load(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    district = District.GOLDEN
    air, road, meter = f"kpi-air-{unique}", f"kpi-road-{unique}", f"kpi-meter-{unique}"
    other_road = f"kpi-road-unset-{unique}"
    # Every device reads every 10 minutes; the road is commissioned with its free-flow speed,
    # the other road without one (it counts in the speed, not in the congestion).
    await db_pool.executemany(
        "INSERT INTO devices (device_id, kind, district, metadata) VALUES ($1, $2, $3, $4)",
        [
            (air, "air", district.value, {"expected_interval_s": 600}),
            (road, "traffic", district.value, {"expected_interval_s": 600, "free_flow_kmh": 60}),
            (other_road, "traffic", district.value, {"expected_interval_s": 600}),
            (meter, "energy", district.value, {"expected_interval_s": 600}),
        ],
    )
    steps = [AT - timedelta(hours=20) + timedelta(minutes=10 * i) for i in range(120)]
    await insert_readings(
        db_pool,
        Kind.AIR,
        air,
        [{"ts": ts, "pm2_5": 12.0, "pm10": 100.0, "no2": 50.0} for ts in steps],
    )
    recent = [ts for ts in steps if ts >= AT - timedelta(hours=2)]
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        road,
        [
            {
                "ts": ts,
                "vehicle_count": 10,
                "interval_s": 600.0,
                "avg_speed_kmh": 30.0 if ts >= AT - timedelta(minutes=15) else 60.0,
            }
            for ts in recent
        ],
    )
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        other_road,
        [{"ts": AT - timedelta(minutes=10), "avg_speed_kmh": 90.0}],
    )
    # The register resets once during the day: consumption counts from the reset, never below 0.
    registers = [100.0 + i if i < 100 else float(i - 100) for i in range(len(steps))]
    await insert_readings(
        db_pool,
        Kind.ENERGY,
        meter,
        [
            {"ts": ts, "energy_kwh": r, "power_kw": 5.0}
            for ts, r in zip(steps, registers, strict=True)
        ],
    )
    response = await client.get(
        f"/api/v1/districts/{district.value}/summary", params={"at": AT.isoformat()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["air"]["aqi"] == 73
    assert body["air"]["dominant"] == "pm10"
    assert body["air"]["category"] == "moderate"
    assert body["air"]["pollutants"]["pm2_5"]["sub_index"] == 56
    await check_windows(db_pool, district, body)
    midnight = datetime(2024, 7, 9, 19, 0, tzinfo=UTC)
    today = [r for ts, r in zip(steps, registers, strict=True) if ts >= midnight]
    before = [r for ts, r in zip(steps, registers, strict=True) if ts < midnight][-1]
    want, prev = 0.0, before
    for value in today:
        want += value - prev if value >= prev else value
        prev = value
    assert body["energy"]["consumption_today_kwh"] == want

    city = (await client.get("/api/v1/city/summary", params={"at": AT.isoformat()})).json()
    assert city["district"] is None
    assert city["air"]["aqi"] >= 73
    assert [d["district"] for d in city["districts"]] == [d.value for d in District]


async def test_energy_load_sums_each_meters_power_and_ignores_silent_meters(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    at = datetime(2024, 8, 14, 9, 0, tzinfo=UTC)  # no other test writes August 2024
    district = District.GREEN
    recent = [at - timedelta(minutes=14) + timedelta(minutes=2 * i) for i in range(7)]
    for name, power in (("a", 5.0), ("b", 3.0)):
        meter = f"load-{name}-{unique}"
        await register(db_pool, meter, Kind.ENERGY, district)
        await insert_readings(
            db_pool, Kind.ENERGY, meter, [{"ts": ts, "power_kw": power} for ts in recent]
        )
    await register(db_pool, f"load-silent-{unique}", Kind.ENERGY, district)
    response = await client.get(
        f"/api/v1/districts/{district.value}/summary", params={"at": at.isoformat()}
    )
    assert response.status_code == 200, response.text
    assert response.json()["energy"]["load_kw"] == 8.0


async def test_an_areas_rate_is_its_flow_the_sum_of_its_detectors_rates(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    start = datetime(2024, 10, 8, 6, 0, tzinfo=UTC)  # no other test writes October 2024
    district = District.GROWING
    # Two roads counting every minute: 10 and 5 vehicles a minute, so 600 and 300 an hour.
    for name, per_minute in (("fast", 10), ("slow", 5)):
        road = f"flow-{name}-{unique}"
        await register(db_pool, road, Kind.TRAFFIC, district)
        await insert_readings(
            db_pool,
            Kind.TRAFFIC,
            road,
            [
                {
                    "ts": start + timedelta(minutes=m),
                    "vehicle_count": per_minute,
                    "interval_s": 60.0,
                }
                for m in range(60)
            ],
        )
    params = {
        "metric": "vehicle_count",
        "bucket": "1h",
        "from": start.isoformat(),
        "to": (start + timedelta(hours=1)).isoformat(),
    }
    url = f"/api/v1/districts/{district.value}/aggregates"
    rate = (await client.get(url, params=params | {"fn": "rate"})).json()
    total = (await client.get(url, params=params | {"fn": "sum"})).json()
    assert rate["unit"] == "vehicles/h"
    assert [i["value"] for i in rate["items"]] == [900.0]
    # Over a whole hour of complete data, the flow is the hour's count.
    assert [i["value"] for i in total["items"]] == [900]


async def test_completeness_is_a_fraction_even_when_a_device_reports_faster_than_declared(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"fast-{unique}"
    # Registered without a reading period: the default (60 s) applies, but it sends every second.
    await register(db_pool, device_id, Kind.AIR, District.GATE)
    start = datetime(2024, 10, 9, 6, 0, tzinfo=UTC)
    await insert_readings(
        db_pool,
        Kind.AIR,
        device_id,
        [{"ts": start + timedelta(seconds=s), "pm10": 1.0} for s in range(120)],
    )
    params = {
        "metric": "pm10",
        "bucket": "1m",
        "fn": "count",
        "from": start.isoformat(),
        "to": (start + timedelta(minutes=3)).isoformat(),
        "fill": "true",
    }
    items = (await client.get(f"/api/v1/devices/{device_id}/aggregates", params=params)).json()
    assert [(i["count"], i["completeness"]) for i in items["items"]] == [
        (60, 1.0),
        (60, 1.0),
        (0, 0.0),
    ]


async def test_congestion_on_a_fresh_city_uses_the_roads_configured_free_flow_speed(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    at = datetime(2024, 11, 5, 8, 0, tzinfo=UTC)  # no other test writes November 2024
    road = f"fresh-road-{unique}"
    await db_pool.execute(
        "INSERT INTO devices (device_id, kind, district, metadata) VALUES ($1, 'traffic', $2, $3)",
        road,
        District.GATE.value,
        {"free_flow_kmh": 60, "expected_interval_s": 60},
    )
    # Ten minutes of data, all of it in a jam: the fastest hour seen is the jam itself, so only
    # the configured speed can say this road is congested.
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        road,
        [
            {
                "ts": at - timedelta(minutes=m),
                "avg_speed_kmh": 15.0,
                "vehicle_count": 2,
                "interval_s": 60.0,
            }
            for m in range(1, 11)
        ],
    )
    body = (
        await client.get("/api/v1/districts/gate/summary", params={"at": at.isoformat()})
    ).json()
    mine = body["traffic"]
    assert mine["congestion"] == 0.75
    assert mine["free_flow_kmh"] == 60.0
    expected = await expected_readings(db_pool, Kind.TRAFFIC, District.GATE, 3600)
    assert mine["windows"]["vehicles_per_hour"]["coverage"] == round(10 / expected, 4)
    assert mine["vehicles_per_hour"] == 120.0


async def test_a_road_without_a_configured_speed_learns_one_from_a_day_of_history(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    at = datetime(2024, 12, 10, 6, 0, tzinfo=UTC)  # no other test writes December 2024
    learned, young = f"learn-{unique}", f"learn-young-{unique}"
    for road in (learned, young):
        await register(db_pool, road, Kind.TRAFFIC, District.GREEN)
    # 30 hours of history: 20 at 40 km/h, 10 (the night) at 70; the 85th percentile is 70.
    history = [
        {"ts": at - timedelta(hours=h, minutes=30), "avg_speed_kmh": 70.0 if h <= 10 else 40.0}
        for h in range(1, 31)
    ]
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        learned,
        [*history, {"ts": at - timedelta(minutes=5), "avg_speed_kmh": 35.0}],
    )
    # Ten hours are not enough to learn from: this road stays out of the congestion.
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        young,
        [
            *(
                {"ts": at - timedelta(hours=h, minutes=30), "avg_speed_kmh": 50.0}
                for h in range(1, 11)
            ),
            {"ts": at - timedelta(minutes=5), "avg_speed_kmh": 10.0},
        ],
    )
    await rollups.roll_up(db_pool)
    body = (
        await client.get("/api/v1/districts/green/summary", params={"at": at.isoformat()})
    ).json()
    traffic = body["traffic"]
    assert traffic["avg_speed_kmh"] == 22.5
    assert traffic["free_flow_kmh"] == 70.0
    assert traffic["congestion"] == 0.5
    assert traffic["congestion_devices"] == 1
