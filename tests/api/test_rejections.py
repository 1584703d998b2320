"""The rejected-readings listing: filters, newest first, and payloads that are not text."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.api.conftest import parse_ts

NOT_UTF8 = b'{"ts": "\xff\xfe", "pm10": 1}'


def recent_minute() -> datetime:
    """Where the seeded rejections start: an hour ago, whole minute. Every ingest replica drops
    rejections older than 30 days when it starts, so a fixed old date could vanish mid-test."""
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


async def seed(pool: asyncpg.Pool, device_id: str, t0: datetime) -> None:
    rows: list[tuple[Any, ...]] = [
        (
            t0,
            f"alatau/air/{device_id}/telemetry",
            "air",
            device_id,
            "out_of_range",
            "pm10 is above 5000",
            b'{"ts": 1, "pm10": 9000}',
        ),
        (
            t0 + timedelta(minutes=1),
            f"alatau/air/{device_id}/telemetry",
            "air",
            device_id,
            "not_utf8",
            "the payload is not UTF-8 text",
            NOT_UTF8,
        ),
        (
            t0 + timedelta(minutes=2),
            f"alatau/air/{device_id}/telemetry",
            "air",
            device_id,
            "unknown_field",
            "colour is not an air metric",
            b'{"colour": "red"}',
        ),
    ]
    await pool.executemany(
        "INSERT INTO ingest_rejections"
        " (received_at, topic, kind, device_id, reason, detail, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        rows,
    )


async def test_rejections_newest_first_with_raw_payloads(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"rej-{unique}"
    t0 = recent_minute()
    await seed(db_pool, device_id, t0)
    response = await client.get("/api/v1/ingest/rejections", params={"device_id": device_id})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["reason"] for item in items] == ["unknown_field", "not_utf8", "out_of_range"]
    assert [parse_ts(item["received_at"]) for item in items] == [
        t0 + timedelta(minutes=2),
        t0 + timedelta(minutes=1),
        t0,
    ]
    first = items[0]
    assert first == {
        "received_at": first["received_at"],
        "topic": f"alatau/air/{device_id}/telemetry",
        "kind": "air",
        "device_id": device_id,
        "reason": "unknown_field",
        "detail": "colour is not an air metric",
        "payload": '{"colour": "red"}',
        "payload_base64": None,
    }
    binary = items[1]
    assert base64.b64decode(binary["payload_base64"]) == NOT_UTF8
    assert binary["payload"] == NOT_UTF8.decode("utf-8", errors="replace")
    assert "\ufffd" in binary["payload"]


async def test_rejection_filters(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    device_id = f"rejf-{unique}"
    t0 = recent_minute()
    await seed(db_pool, device_id, t0)

    async def reasons(**params: Any) -> list[str]:
        response = await client.get(
            "/api/v1/ingest/rejections", params={"device_id": device_id, **params}
        )
        assert response.status_code == 200, response.text
        return [item["reason"] for item in response.json()["items"]]

    assert await reasons(reason="not_utf8") == ["not_utf8"]
    assert await reasons(limit=2) == ["unknown_field", "not_utf8"]
    window = {
        "from": (t0 + timedelta(minutes=1)).isoformat(),
        "to": (t0 + timedelta(minutes=2)).isoformat(),
    }
    assert await reasons(**window) == ["not_utf8"]
    assert await reasons(reason="too_old") == []
    response = await client.get("/api/v1/ingest/rejections", params={"limit": 10**6})
    assert response.json()["error"] == "limit_too_large"
