"""Latest readings and raw reading pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from devices.contract import District, Kind, metric_names
from tests.api.conftest import insert_readings, parse_ts
from tests.support import register

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


async def test_latest_is_newest_by_reading_time_not_arrival(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"lat-{unique}"
    await register(db_pool, device_id, Kind.TRAFFIC, District.GOLDEN)
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        device_id,
        [
            {"ts": T0, "received_at": T0, "vehicle_count": 7, "avg_speed_kmh": 41.5},
            # Older by reading time but arrived last, e.g. from a device catching up.
            {
                "ts": T0 - timedelta(minutes=30),
                "received_at": T0 + timedelta(minutes=5),
                "vehicle_count": 99,
            },
        ],
    )
    response = await client.get(f"/api/v1/devices/{device_id}/latest")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device_id"] == device_id
    assert body["kind"] == "traffic"
    assert body["district"] == "golden"
    assert parse_ts(body["ts"]) == T0
    assert parse_ts(body["received_at"]) == T0
    assert body["values"] == {
        "vehicle_count": 7,
        "interval_s": None,
        "avg_speed_kmh": 41.5,
        "occupancy_pct": None,
        "heavy_vehicle_count": None,
    }
    assert isinstance(body["values"]["vehicle_count"], int)


async def test_latest_of_unknown_or_silent_device_is_404(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    response = await client.get(f"/api/v1/devices/ghost-{unique}/latest")
    assert response.status_code == 404
    assert response.json()["error"] == "device_not_found"
    await register(db_pool, f"quiet-{unique}", Kind.AIR)
    response = await client.get(f"/api/v1/devices/quiet-{unique}/latest")
    assert response.status_code == 404
    assert response.json()["error"] == "no_readings"


async def test_latest_list_filters_by_kind_and_district(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    devices: dict[str, tuple[Kind, District, dict[str, Any]]] = {
        f"ll-{unique}-tg": (Kind.TRAFFIC, District.GATE, {"vehicle_count": 3}),
        f"ll-{unique}-tr": (Kind.TRAFFIC, District.GREEN, {"occupancy_pct": 12.5}),
        f"ll-{unique}-ag": (Kind.AIR, District.GATE, {"pm2_5": 8.25}),
        f"ll-{unique}-eg": (Kind.ENERGY, District.GATE, {"power_kw": -3.5}),
    }
    for device_id, (kind, district, values) in devices.items():
        await register(db_pool, device_id, kind, district)
        await insert_readings(
            db_pool,
            kind,
            device_id,
            [
                {"ts": T0 - timedelta(hours=1), **values},
                {"ts": T0, **values},
                {"ts": T0 - timedelta(hours=2), **values},
            ],
        )
    await register(db_pool, f"ll-{unique}-silent", Kind.TRAFFIC, District.GATE)

    async def latest(**params: str) -> dict[str, dict[str, Any]]:
        response = await client.get("/api/v1/latest", params=params)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        for item in items:
            assert item["kind"] == params.get("kind", item["kind"])
            assert item["district"] == params.get("district", item["district"])
        return {item["device_id"]: item for item in items if unique in item["device_id"]}

    everything = await latest()
    assert set(everything) == set(devices)
    for device_id, (kind, _, values) in devices.items():
        item = everything[device_id]
        assert item["kind"] == kind.value
        assert parse_ts(item["ts"]) == T0
        assert set(item["values"]) == set(metric_names(kind))
        assert {k: v for k, v in item["values"].items() if v is not None} == values

    assert set(await latest(kind="traffic")) == {f"ll-{unique}-tg", f"ll-{unique}-tr"}
    assert set(await latest(kind="traffic", district="gate")) == {f"ll-{unique}-tg"}
    assert set(await latest(district="gate")) == {
        f"ll-{unique}-tg",
        f"ll-{unique}-ag",
        f"ll-{unique}-eg",
    }
    response = await client.get("/api/v1/latest", params={"district": "downtown"})
    assert response.status_code == 422


async def test_raw_pages_return_every_row_once_in_ts_order(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"raw-{unique}"
    await register(db_pool, device_id, Kind.ENERGY)
    # Irregular gaps with microseconds, inserted out of order.
    stamps = [T0 + timedelta(seconds=37 * i, microseconds=1234 * i) for i in range(25)]
    rows = [
        {"ts": ts, "energy_kwh": 1000.0 + i, "voltage_v": 230 + i % 3}
        for i, ts in enumerate(stamps)
    ]
    await insert_readings(db_pool, Kind.ENERGY, device_id, rows[::2] + rows[1::2])
    start, end = stamps[2], stamps[22]  # from inclusive, to exclusive

    got: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat(), "limit": 7}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(f"/api/v1/devices/{device_id}/readings", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= 7
        got.extend(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3  # 20 rows: 7 + 7 + 6
    assert [parse_ts(item["ts"]) for item in got] == stamps[2:22]
    for item, row in zip(got, rows[2:22], strict=True):
        assert item["values"] == {
            "energy_kwh": row["energy_kwh"],
            "power_kw": None,
            "voltage_v": row["voltage_v"],
            "current_a": None,
            "power_factor": None,
        }
        assert parse_ts(item["received_at"]).tzinfo is not None


async def test_raw_page_exactly_full_has_no_dangling_cursor(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"rawx-{unique}"
    await register(db_pool, device_id, Kind.AIR)
    await insert_readings(
        db_pool,
        Kind.AIR,
        device_id,
        [{"ts": T0 + timedelta(minutes=i), "o3": 1.0} for i in range(4)],
    )
    params: dict[str, Any] = {
        "from": T0.isoformat(),
        "to": (T0 + timedelta(hours=1)).isoformat(),
        "limit": 4,
    }
    body = (await client.get(f"/api/v1/devices/{device_id}/readings", params=params)).json()
    assert len(body["items"]) == 4
    assert body["next_cursor"] is None


async def test_raw_defaults_to_the_last_24_hours(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"rawd-{unique}"
    await register(db_pool, device_id, Kind.AIR)
    now = datetime.now(UTC)
    await insert_readings(
        db_pool,
        Kind.AIR,
        device_id,
        [{"ts": now - timedelta(hours=25), "co": 1.0}, {"ts": now - timedelta(hours=1), "co": 2.0}],
    )
    body = (await client.get(f"/api/v1/devices/{device_id}/readings")).json()
    assert [item["values"]["co"] for item in body["items"]] == [2.0]


async def test_raw_refuses_bad_queries(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"rawq-{unique}"
    await register(db_pool, device_id, Kind.AIR)
    url = f"/api/v1/devices/{device_id}/readings"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"from": "2025-06-01T00:00:00"}, "validation_error"),  # no offset
        ({"from": "yesterday"}, "validation_error"),
        ({"limit": 10_001}, "limit_too_large"),
        ({"limit": 0}, "validation_error"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        (
            {"from": "2025-06-02T00:00:00+05:00", "to": "2025-06-01T00:00:00+05:00"},
            "invalid_range",
        ),
    ]
    for params, code in cases:
        response = await client.get(url, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"] == code, params
    response = await client.get(f"/api/v1/devices/ghost-{unique}/readings")
    assert response.status_code == 404


async def test_an_unencoded_plus_in_the_offset_is_understood(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"rawp-{unique}"
    await register(db_pool, device_id, Kind.AIR)
    await insert_readings(db_pool, Kind.AIR, device_id, [{"ts": T0, "no2": 4.0}])
    # A hand-typed URL: "+05:00" arrives as " 05:00".
    url = (
        f"/api/v1/devices/{device_id}/readings"
        "?from=2025-06-01T17:00:00+05:00&to=2025-06-01T18:00:00+05:00"
    )
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert [parse_ts(item["ts"]) for item in response.json()["items"]] == [T0]


async def test_latest_list_is_not_moved_back_by_a_reading_that_arrives_late(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"late-{unique}"
    await register(db_pool, device_id, Kind.AIR, District.GROWING)
    await insert_readings(db_pool, Kind.AIR, device_id, [{"ts": T0, "pm2_5": 12.0}])
    # Arrives after, holds an older reading: GET /latest keeps the newer one.
    await insert_readings(
        db_pool, Kind.AIR, device_id, [{"ts": T0 - timedelta(minutes=10), "pm2_5": 80.0}]
    )

    async def listed() -> dict[str, Any]:
        response = await client.get("/api/v1/latest", params={"kind": "air"})
        assert response.status_code == 200, response.text
        mine: list[dict[str, Any]] = [
            item for item in response.json()["items"] if item["device_id"] == device_id
        ]
        assert len(mine) == 1
        return mine[0]

    item = await listed()
    assert (parse_ts(item["ts"]), item["values"]["pm2_5"]) == (T0, 12.0)
    single = (await client.get(f"/api/v1/devices/{device_id}/latest")).json()
    assert (parse_ts(single["ts"]), single["values"]) == (parse_ts(item["ts"]), item["values"])
    # A newer one does replace it.
    await insert_readings(
        db_pool, Kind.AIR, device_id, [{"ts": T0 + timedelta(minutes=1), "pm2_5": 14.5}]
    )
    item = await listed()
    assert (parse_ts(item["ts"]), item["values"]["pm2_5"]) == (T0 + timedelta(minutes=1), 14.5)
