"""Aggregates per device, checked against the same sums done in Python on the seeded rows."""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from core.config import Settings
from devices.contract import Kind
from tests.api.conftest import insert_readings, parse_ts, serve
from tests.support import register

ALMATY = ZoneInfo("Asia/Almaty")
START = datetime(2025, 3, 9, 17, 0, tzinfo=UTC)  # 22:00 in Almaty, two hours before midnight
END = datetime(2025, 3, 11, 2, 0, tzinfo=UTC)
STEP = timedelta(minutes=7, seconds=13)

FLOORS: dict[str, Callable[[datetime], datetime]] = {
    "1m": lambda ts: ts.replace(second=0, microsecond=0),
    "1h": lambda ts: ts.replace(minute=0, second=0, microsecond=0),
    "1d": lambda ts: (
        ts.astimezone(ALMATY).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    ),
    "1mo": lambda ts: (
        ts.astimezone(ALMATY)
        .replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        .astimezone(UTC)
    ),
}
FUNCTIONS: dict[str, Callable[[list[Any]], Any]] = {
    "avg": statistics.fmean,
    "min": min,
    "max": max,
    "sum": sum,
    "count": len,
}


def seed_rows() -> list[dict[str, Any]]:
    rows = []
    ts, i = START, 0
    while ts < END:
        rows.append(
            {
                "ts": ts,
                "vehicle_count": (i * 7) % 23,
                # Every fifth reading lacks the speed: it counts as a reading, not as a value.
                "avg_speed_kmh": None if i % 5 == 0 else 20 + (i * 3.7) % 60,
            }
        )
        ts, i = ts + STEP, i + 1
    return rows


def expected(
    rows: list[dict[str, Any]], metric: str, bucket: str, fn: str
) -> list[tuple[datetime, Any, int]]:
    groups: dict[datetime, list[Any]] = defaultdict(list)
    for row in rows:
        groups[FLOORS[bucket](row["ts"])].append(row[metric])
    result = []
    for start in sorted(groups):
        values = [v for v in groups[start] if v is not None]
        value = FUNCTIONS[fn](values) if values or fn == "count" else None
        result.append((start, value, len(groups[start])))
    return result


@pytest.fixture(scope="module")
async def device(db_pool: asyncpg.Pool) -> tuple[str, list[dict[str, Any]]]:
    """One traffic device with about 36 hours of readings, shared by the read-only tests."""
    device_id = f"agg-{uuid.uuid4().hex[:10]}"
    await register(db_pool, device_id, Kind.TRAFFIC)
    rows = seed_rows()
    await insert_readings(db_pool, Kind.TRAFFIC, device_id, rows)
    # Just outside [from, to): must not be counted.
    await insert_readings(
        db_pool,
        Kind.TRAFFIC,
        device_id,
        [
            {"ts": START - timedelta(microseconds=1), "vehicle_count": 1000},
            {"ts": END, "vehicle_count": 1000},
        ],
    )
    return device_id, rows


@pytest.mark.parametrize("bucket", ["1m", "1h", "1d"])
@pytest.mark.parametrize("fn", ["avg", "min", "max", "sum", "count"])
@pytest.mark.parametrize("metric", ["vehicle_count", "avg_speed_kmh"])
async def test_aggregates_match_python(
    client: httpx.AsyncClient,
    device: tuple[str, list[dict[str, Any]]],
    bucket: str,
    fn: str,
    metric: str,
) -> None:
    device_id, rows = device
    response = await client.get(
        f"/api/v1/devices/{device_id}/aggregates",
        params={
            "metric": metric,
            "bucket": bucket,
            "fn": fn,
            "from": START.isoformat(),
            "to": END.isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device_id"] == device_id
    assert body["metric"] == metric
    assert body["unit"] == ("vehicles" if metric == "vehicle_count" else "km/h")
    assert body["bucket"] == bucket
    assert body["fn"] == fn
    got = [(parse_ts(i["bucket_start"]), i["value"], i["count"]) for i in body["items"]]
    want = expected(rows, metric, bucket, fn)
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[2] for g in got] == [w[2] for w in want]
    for (start, value, _), (_, want_value, _) in zip(got, want, strict=True):
        assert value == pytest.approx(want_value), start
        if fn in {"count", "sum", "min", "max"} and metric == "vehicle_count":
            assert isinstance(value, int)


async def test_day_buckets_start_at_almaty_midnight(
    client: httpx.AsyncClient, device: tuple[str, list[dict[str, Any]]]
) -> None:
    device_id, rows = device
    params = {"metric": "vehicle_count", "bucket": "1d", "fn": "count"}
    params |= {"from": START.isoformat(), "to": END.isoformat()}
    body = (await client.get(f"/api/v1/devices/{device_id}/aggregates", params=params)).json()
    # Almaty is UTC+5 all year since March 2024: its midnight is 19:00 UTC the day before.
    assert [i["bucket_start"] for i in body["items"]] == [
        "2025-03-09T00:00:00.000000+05:00",
        "2025-03-10T00:00:00.000000+05:00",
        "2025-03-11T00:00:00.000000+05:00",
    ]
    assert sum(i["count"] for i in body["items"]) == len(rows)


async def test_month_buckets_start_on_the_first_in_almaty(
    client: httpx.AsyncClient, device: tuple[str, list[dict[str, Any]]]
) -> None:
    device_id, rows = device
    params = {"metric": "vehicle_count", "bucket": "1mo", "fn": "sum"}
    params |= {"from": "2025-01-01T00:00:00+05:00", "to": "2025-05-01T00:00:00+05:00"}
    body = (await client.get(f"/api/v1/devices/{device_id}/aggregates", params=params)).json()
    assert [{k: i[k] for k in ("bucket_start", "value", "count")} for i in body["items"]] == [
        {
            "bucket_start": "2025-03-01T00:00:00.000000+05:00",
            "value": sum(r["vehicle_count"] for r in rows) + 2000,
            "count": len(rows) + 2,
        }
    ]


async def test_too_many_buckets_is_refused_not_truncated(
    settings: Settings, db_pool: asyncpg.Pool, unique: str, admin_headers: dict[str, str]
) -> None:
    device_id = f"aggmax-{unique}"
    await register(db_pool, device_id, Kind.AIR)
    limited = settings.model_copy(
        update={"api": settings.api.model_copy(update={"max_buckets": 60})}
    )
    url = f"/api/v1/devices/{device_id}/aggregates"
    params = {"metric": "pm10", "from": START.isoformat()}
    async with serve(limited, admin_headers) as (_, client):
        ok = await client.get(
            url, params={**params, "bucket": "1m", "to": (START + timedelta(hours=1)).isoformat()}
        )
        assert ok.status_code == 200, ok.text
        response = await client.get(
            url,
            params={**params, "bucket": "1m", "to": (START + timedelta(minutes=61)).isoformat()},
        )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "too_many_buckets"
    assert "60" in body["detail"]


async def test_unknown_metric_names_the_metrics_that_exist(
    client: httpx.AsyncClient, device: tuple[str, list[dict[str, Any]]]
) -> None:
    device_id, _ = device
    for metric in ("pm2_5", "vehicle_count; DROP TABLE devices", "ts"):
        response = await client.get(
            f"/api/v1/devices/{device_id}/aggregates", params={"metric": metric, "bucket": "1h"}
        )
        assert response.status_code == 422, metric
        body = response.json()
        assert body["error"] == "unknown_metric"
        assert "vehicle_count, interval_s, avg_speed_kmh" in body["detail"]


@pytest.mark.parametrize(
    "bucket", ["", "5", "m", "0m", "1y", "1.5h", "-1h", "1 h", "1M", "99999999m"]
)
async def test_bad_buckets_are_422(
    client: httpx.AsyncClient, device: tuple[str, list[dict[str, Any]]], bucket: str
) -> None:
    device_id, _ = device
    response = await client.get(
        f"/api/v1/devices/{device_id}/aggregates",
        params={"metric": "vehicle_count", "bucket": bucket},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_bucket"


async def test_aggregate_query_errors(
    client: httpx.AsyncClient, device: tuple[str, list[dict[str, Any]]], unique: str
) -> None:
    device_id, _ = device
    url = f"/api/v1/devices/{device_id}/aggregates"
    response = await client.get(
        url, params={"metric": "vehicle_count", "bucket": "1h", "fn": "median"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    response = await client.get(url, params={"bucket": "1h"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "metric"]
    response = await client.get(
        f"/api/v1/devices/ghost-{unique}/aggregates", params={"metric": "pm10", "bucket": "1h"}
    )
    assert response.status_code == 404
    assert response.json()["error"] == "device_not_found"
