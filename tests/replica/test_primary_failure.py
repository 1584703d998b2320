"""The primary stopped at once (``pg_ctl stop -m immediate``, as a crash): reads keep answering
from the standby, writes answer the one 503, and all is well again when the primary is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import websockets

from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key
from core.config import Settings
from devices.contract import District, Kind, telemetry_topic
from stack.services import PostgresCluster
from tests.api.conftest import insert_readings
from tests.live.sse import Event, SseClient
from tests.replica.conftest import replayed, running_api
from tests.support import bearer, eventually, publish, register

DATABASE_UNAVAILABLE = {
    "error": "database_unavailable",
    "detail": "the database is unavailable; retry shortly",
}


@asynccontextmanager
async def primary_down(primary: PostgresCluster) -> AsyncIterator[None]:
    """Stop the primary as a crash would; start it again whatever the test found."""
    primary.stop(mode="immediate")
    assert not primary.running()
    try:
        yield
    finally:
        primary.start()


async def _next_reading(sse: SseClient) -> Event:
    while True:
        event = await sse.next_event()
        if event.event == "reading":
            return event


async def _stored_count(
    standby_pool: asyncpg.Pool, lower: datetime, upper: datetime, district: District | None
) -> int:
    """PM2.5 readings in ``[lower, upper)`` of a district's devices (or the city's)."""
    count: int = await standby_pool.fetchval(
        "SELECT count(r.pm2_5) FROM air_readings r JOIN devices d USING (device_id)"
        " WHERE r.ts >= $1 AND r.ts < $2 AND ($3::text IS NULL OR d.district = $3)",
        lower,
        upper,
        district.value if district else None,
    )
    return count


async def _reads_answer(
    client: httpx.AsyncClient, standby_pool: asyncpg.Pool, device: str, start: datetime
) -> None:
    lower, upper = start - timedelta(hours=1), datetime.now(UTC)
    window = {"from": lower.isoformat(), "to": upper.isoformat()}
    query = {**window, "metric": "pm2_5", "bucket": "1h", "fn": "count"}
    aggregates = await client.get(f"/api/v1/devices/{device}/aggregates", params=query)
    assert aggregates.status_code == 200, aggregates.text
    assert sum(item["count"] for item in aggregates.json()["items"]) == 10
    scopes = {
        f"/api/v1/districts/{District.GROWING.value}/aggregates": District.GROWING,
        "/api/v1/city/aggregates": None,
    }
    for path, district in scopes.items():
        area = await client.get(path, params=query)
        assert area.status_code == 200, area.text
        stored = await _stored_count(standby_pool, lower, upper, district)
        assert sum(item["count"] for item in area.json()["items"]) == stored >= 10
    page = await client.get(f"/api/v1/devices/{device}/readings", params=window)
    assert [item["values"]["pm2_5"] for item in page.json()["items"]] == [
        10.0 + i for i in range(10)
    ]
    latest = await client.get(f"/api/v1/devices/{device}/latest")
    assert latest.json()["values"]["pm2_5"] == 19.0
    listed = await client.get("/api/v1/latest", params={"kind": "air", "district": "growing"})
    assert device in [item["device_id"] for item in listed.json()["items"]]
    for path in ("/api/v1/city/summary", f"/api/v1/districts/{District.GROWING.value}/summary"):
        assert (await client.get(path)).status_code == 200
    rejections = await client.get("/api/v1/ingest/rejections", params={"device_id": device})
    assert [item["reason"] for item in rejections.json()["items"]] == ["out_of_range"]


async def _writes_refused(client: httpx.AsyncClient, device: str) -> None:
    """Every write, and the registry's reads (they must see their own writes), is the 503."""
    attempts: list[tuple[str, str, object]] = [
        (
            "POST",
            "/api/v1/devices",
            {"device_id": f"{device}-x", "kind": "air", "district": "growing"},
        ),
        ("PATCH", f"/api/v1/devices/{device}", {"metadata": {"note": "moved"}}),
        ("DELETE", f"/api/v1/devices/{device}", None),
        ("POST", "/api/v1/keys", {"name": "during-failure", "role": "reader"}),
        ("POST", "/api/v1/alerts/1/acknowledge", {}),
        ("GET", f"/api/v1/devices/{device}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body)
        answer = (response.status_code, response.json())
        assert answer == (503, DATABASE_UNAVAILABLE), (method, path)


async def test_a_primary_failure_leaves_reads_answering_from_the_standby(
    replicated_settings: Settings,
    primary: PostgresCluster,
    primary_pool: asyncpg.Pool,
    standby_pool: asyncpg.Pool,
    replica_keys: dict[Role, str],
    unique: str,
) -> None:
    device = f"fail-{unique}"
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)
    await register(primary_pool, device, Kind.AIR, District.GROWING)
    rows = [{"ts": start + timedelta(minutes=i), "pm2_5": 10.0 + i} for i in range(10)]
    await insert_readings(primary_pool, Kind.AIR, device, rows)
    await primary_pool.execute(
        "INSERT INTO ingest_rejections (topic, kind, device_id, reason, detail, payload)"
        " VALUES ($1, 'air', $2, 'out_of_range', 'pm2_5 above 5000', '{}')",
        telemetry_topic(Kind.AIR, device),
        device,
    )
    # A key first used while the primary is away: the api can only find it on the standby.
    fresh = await issue_key(
        primary_pool, ApiKeyCreate(name=f"fresh-{unique}", role=Role.READER), created_by=None
    )
    await replayed(primary_pool, standby_pool)

    async with (
        running_api(replicated_settings) as (app, url),
        httpx.AsyncClient(base_url=url, headers=bearer(fresh.token)) as reader,
        httpx.AsyncClient(base_url=url, headers=bearer(replica_keys[Role.ADMIN])) as admin,
    ):
        token = replica_keys[Role.READER]
        sse = await SseClient.open(f"{url}/api/v1/live?access_token={token}&device={device}")
        try:
            assert (await sse.next_event()).event == "snapshot"
            async with primary_down(primary):
                await _reads_answer(reader, standby_pool, device, start)
                health = await reader.get("/api/v1/health")
                assert health.status_code == 200
                body = health.json()
                assert (body["status"], body["database"], body["read_database"]) == (
                    "degraded",
                    "unavailable",
                    "ok",
                )
                await _writes_refused(admin, device)

                # The live feed: readings from the broker, its registry and snapshot from the
                # standby.
                moment = datetime.now(UTC)
                payload = orjson.dumps({"ts": moment.isoformat(), "pm2_5": 42.0})
                await publish(replicated_settings, [(telemetry_topic(Kind.AIR, device), payload)])
                event = await _next_reading(sse)
                assert (event.json()["device_id"], event.json()["values"]["pm2_5"]) == (
                    device,
                    42.0,
                )
                await app.state.live.refresh_devices()
                await app.state.live.warm()
                assert app.state.live.hub.latest[device].device_id == device
                ws_url = url.replace("http://", "ws://") + (
                    f"/api/v1/live/ws?access_token={fresh.token}&device={device}"
                )
                async with websockets.connect(ws_url) as ws:
                    snapshot = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert snapshot["type"] == "snapshot"
                assert [item["device_id"] for item in snapshot["items"]] == [device]
        finally:
            await sse.close()

        # The primary is back: the pool reconnects by itself, writes go through again.
        async def registry_status() -> int:
            return (await admin.get(f"/api/v1/devices/{device}")).status_code

        assert await eventually(registry_status, lambda status: status == 200) == 200
        created = await admin.post(
            "/api/v1/devices",
            json={"device_id": f"{device}-after", "kind": "air", "district": "growing"},
        )
        assert created.status_code == 201, created.text
        await replayed(primary_pool, standby_pool)
        # ...and the standby streams again: the new device is known to its reads.
        after = await reader.get(f"/api/v1/devices/{device}-after/latest")
        assert (after.status_code, after.json()["error"]) == (404, "no_readings")
        health = (await reader.get("/api/v1/health")).json()
        assert (health["status"], health["database"], health["read_database"]) == (
            "ok",
            "ok",
            "ok",
        )
