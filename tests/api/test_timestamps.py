"""One spelling for every timestamp the REST API writes: UTC, ``Z``, six fraction digits; the
city calendar's day, week and month buckets at Almaty's offset, gap buckets included."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import asyncpg
import httpx

from devices.contract import District, Kind
from tests.api.conftest import insert_readings
from tests.support import register

UTC_SPELLING: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
CITY_SPELLING: Final = re.compile(r"\d{4}-\d{2}-\d{2}T00:00:00\.000000\+05:00")
TIMESTAMP_FIELDS: Final = {
    "ts",
    "received_at",
    "last_seen",
    "created_at",
    "updated_at",
    "revoked_at",
    "at",
    "from",
    "to",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
}


def timestamps_in(document: Any) -> list[str]:
    """Every value of a timestamp field anywhere in a JSON document."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in TIMESTAMP_FIELDS and isinstance(value, str):
                found.append(value)
            else:
                found.extend(timestamps_in(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(timestamps_in(item))
    return found


async def test_every_rest_timestamp_is_utc_with_z_and_microseconds(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"spell-{unique}"
    await register(db_pool, device_id, Kind.AIR, District.GATE)
    # A whole second and one with a fraction: both come back with six digits.
    now = datetime.now(UTC).replace(microsecond=0)
    await insert_readings(
        db_pool,
        Kind.AIR,
        device_id,
        [
            {"ts": now - timedelta(minutes=3), "received_at": now, "pm10": 5.0},
            {"ts": now - timedelta(minutes=2, microseconds=-1500), "pm10": 6.0},
        ],
    )
    await db_pool.execute("UPDATE devices SET last_seen = $2 WHERE device_id = $1", device_id, now)
    await db_pool.execute(
        "INSERT INTO ingest_rejections (received_at, topic, kind, device_id, reason, detail,"
        " payload) VALUES ($1, $2, 'air', $3, 'invalid_json', 'cut', '{')",
        now,
        f"alatau/air/{device_id}/telemetry",
        device_id,
    )
    local = timezone(timedelta(hours=5))
    answers = [
        await client.get(f"/api/v1/devices/{device_id}"),
        await client.get("/api/v1/devices", params={"q": device_id}),
        await client.get(f"/api/v1/devices/{device_id}/latest"),
        await client.get("/api/v1/latest", params={"kind": "air"}),
        await client.get(
            f"/api/v1/devices/{device_id}/readings",
            params={"from": (now - timedelta(hours=1)).astimezone(local).isoformat()},
        ),
        await client.get("/api/v1/ingest/rejections", params={"device_id": device_id}),
        await client.get("/api/v1/alert-rules"),
        await client.get("/api/v1/alerts"),
        await client.get("/api/v1/keys"),
        await client.get(
            "/api/v1/districts/gate/summary", params={"at": now.astimezone(local).isoformat()}
        ),
    ]
    seen = []
    for answer in answers:
        assert answer.status_code == 200, answer.text
        seen.extend(timestamps_in(answer.json()))
    assert len(seen) > 12
    assert [ts for ts in seen if not UTC_SPELLING.fullmatch(ts)] == []
    summary = answers[-1].json()
    # `at` is the instant asked for, in the API's spelling, not an echo of the caller's.
    assert summary["at"] == now.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    readings = answers[4].json()["items"]
    assert [r["ts"][-8:] for r in readings] == [".000000Z", ".001500Z"]


async def test_gap_and_data_buckets_are_spelled_alike(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"gapspell-{unique}"
    await register(db_pool, device_id, Kind.AIR, District.GATE)
    start = datetime(2024, 9, 3, 10, 0, tzinfo=UTC)  # no other test writes September 2024
    await insert_readings(
        db_pool, Kind.AIR, device_id, [{"ts": start + timedelta(minutes=1), "pm10": 1.0}]
    )
    url = f"/api/v1/devices/{device_id}/aggregates"
    minutes = await client.get(
        url,
        params={
            "metric": "pm10",
            "bucket": "1m",
            "fill": "true",
            "from": start.isoformat(),
            "to": (start + timedelta(minutes=4)).isoformat(),
        },
    )
    items = minutes.json()["items"]
    assert [(i["bucket_start"], i["gap"]) for i in items] == [
        ("2024-09-03T10:00:00.000000Z", True),
        ("2024-09-03T10:01:00.000000Z", False),
        ("2024-09-03T10:02:00.000000Z", True),
        ("2024-09-03T10:03:00.000000Z", True),
    ]
    days = await client.get(
        url,
        params={
            "metric": "pm10",
            "bucket": "1d",
            "fill": "true",
            "from": "2024-09-02T00:00:00+05:00",
            "to": "2024-09-05T00:00:00+05:00",
        },
    )
    day_items = days.json()["items"]
    assert [(i["bucket_start"], i["gap"]) for i in day_items] == [
        ("2024-09-02T00:00:00.000000+05:00", True),
        ("2024-09-03T00:00:00.000000+05:00", False),
        ("2024-09-04T00:00:00.000000+05:00", True),
    ]
    assert all(CITY_SPELLING.fullmatch(i["bucket_start"]) for i in day_items)
