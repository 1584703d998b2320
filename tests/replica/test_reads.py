"""Which database answers which route: with the standby's replay held, an answer that lacks what
the primary just committed came from the standby, one that has it came from the primary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import District, Kind
from tests.api.conftest import insert_readings
from tests.live.sse import SseClient
from tests.replica.conftest import replay_paused, replayed, running_api
from tests.support import bearer, eventually, register


def _minute(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


async def _seed(
    pool: asyncpg.Pool, device: str, start: datetime, count: int, first: float = 10.0
) -> None:
    """``count`` air readings a minute apart from ``start``, PM2.5 ``first``, ``first`` + 1..."""
    rows = [
        {"ts": start + timedelta(minutes=i), "pm2_5": first + i, "humidity_pct": 40.0}
        for i in range(count)
    ]
    await insert_readings(pool, Kind.AIR, device, rows)


def _window(start: datetime, end: datetime) -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat()}


async def _reading_counts(client: httpx.AsyncClient, device: str, window: dict[str, str]) -> Any:
    """What four read routes say of the device: readings counted by the device's, district's
    and city's aggregates, and its raw page's length."""
    query = {**window, "metric": "pm2_5", "bucket": "1h", "fn": "count"}
    counts = []
    for path in (
        f"/api/v1/devices/{device}/aggregates",
        f"/api/v1/districts/{District.GOLDEN.value}/aggregates",
        "/api/v1/city/aggregates",
    ):
        response = await client.get(path, params=query)
        assert response.status_code == 200, response.text
        counts.append(sum(bucket["count"] for bucket in response.json()["items"]))
    page = await client.get(f"/api/v1/devices/{device}/readings", params=window)
    assert page.status_code == 200, page.text
    counts.append(len(page.json()["items"]))
    return counts


async def test_lag_tolerant_reads_come_from_the_standby_and_writes_from_the_primary(
    replicated_settings: Settings,
    primary_pool: asyncpg.Pool,
    standby_pool: asyncpg.Pool,
    replica_keys: dict[Role, str],
    unique: str,
) -> None:
    device = f"rep-{unique}"
    now = datetime.now(UTC)
    start = _minute(now) - timedelta(minutes=30)
    window = _window(start - timedelta(hours=1), now + timedelta(minutes=1))
    await register(primary_pool, device, Kind.AIR, District.GOLDEN)
    await _seed(primary_pool, device, start, 10)
    await replayed(primary_pool, standby_pool)

    async with (
        running_api(replicated_settings) as (_, url),
        httpx.AsyncClient(base_url=url, headers=bearer(replica_keys[Role.ADMIN])) as client,
    ):
        # The district and the city may hold other tests' devices: count what is added.
        before = await _reading_counts(client, device, window)
        assert before[0] == before[3] == 10
        async with replay_paused(standby_pool):
            await _seed(primary_pool, device, start + timedelta(minutes=10), 5, first=20.0)
            stored = await primary_pool.fetchval(
                "SELECT count(*) FROM air_readings WHERE device_id = $1", device
            )
            assert stored == 15
            # The standby has not replayed the five: every read route still says what it did.
            assert await _reading_counts(client, device, window) == before
            latest = await client.get(f"/api/v1/devices/{device}/latest")
            assert latest.json()["values"]["pm2_5"] == 19.0

            # Writes, and the registry that must read them back, are the primary's.
            created = await client.post(
                "/api/v1/devices",
                json={"device_id": f"{device}-new", "kind": "air", "district": "golden"},
            )
            assert created.status_code == 201, created.text
            assert (await client.get(f"/api/v1/devices/{device}-new")).status_code == 200
            # ...while its readings, on the standby, do not know the device yet.
            unknown = await client.get(f"/api/v1/devices/{device}-new/latest")
            assert unknown.status_code == 404
            assert unknown.json()["error"] == "device_not_found"
        await replayed(primary_pool, standby_pool)
        assert await _reading_counts(client, device, window) == [n + 5 for n in before]
        latest = await client.get(f"/api/v1/devices/{device}/latest")
        assert latest.json()["values"]["pm2_5"] == 24.0

        # The api's read pool is connected to the standby under its own name.
        names = await standby_pool.fetch(
            "SELECT DISTINCT application_name FROM pg_stat_activity WHERE backend_type = "
            "'client backend' AND application_name LIKE 'api%'"
        )
        assert {row["application_name"] for row in names} == {"api-read"}


async def test_health_and_metrics_show_the_replica_and_its_lag(
    replicated_settings: Settings,
    primary_pool: asyncpg.Pool,
    standby_pool: asyncpg.Pool,
    replica_keys: dict[Role, str],
    unique: str,
) -> None:
    async with (
        running_api(replicated_settings) as (_, url),
        httpx.AsyncClient(base_url=url, headers=bearer(replica_keys[Role.READER])) as client,
    ):
        # A commit replayed since the standby started: its replay time is known from then on.
        await register(primary_pool, f"lag-{unique}-1", Kind.AIR)
        await replayed(primary_pool, standby_pool)
        caught_up = (await client.get("/api/v1/health")).json()
        assert caught_up["status"] == "ok"
        assert (caught_up["database"], caught_up["read_database"]) == ("ok", "ok")
        assert caught_up["replica_lag_s"] >= 0
        async with replay_paused(standby_pool):
            # Received but not replayed: the lag is the age of the newest replayed commit.
            await register(primary_pool, f"lag-{unique}-2", Kind.AIR)
            behind = await _lag_once_received(client, standby_pool, primary_pool)
        assert behind > 0
        metrics = await client.get("/metrics")
        assert "alatau_api_read_replica_up 1.0" in metrics.text
        assert "alatau_api_read_replica_lag_seconds" in metrics.text


async def _lag_once_received(
    client: httpx.AsyncClient, standby_pool: asyncpg.Pool, primary_pool: asyncpg.Pool
) -> float:
    """The lag /health reports once the standby has received (not replayed) the primary's
    newest WAL."""
    target = await primary_pool.fetchval("SELECT pg_current_wal_lsn()")

    async def received() -> bool:
        done: bool = await standby_pool.fetchval(
            "SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", target
        )
        return done

    assert await eventually(received, bool)
    body = (await client.get("/api/v1/health")).json()
    lag: float = body["replica_lag_s"]
    return lag


async def test_the_live_feed_reads_its_directory_and_snapshot_from_the_standby(
    replicated_settings: Settings,
    primary_pool: asyncpg.Pool,
    standby_pool: asyncpg.Pool,
    replica_keys: dict[Role, str],
    unique: str,
) -> None:
    device = f"rep-live-{unique}"
    async with running_api(replicated_settings) as (app, url):
        live = app.state.live
        async with replay_paused(standby_pool):
            await register(primary_pool, device, Kind.AIR, District.GREEN)
            await _seed(primary_pool, device, _minute(datetime.now(UTC)), 1)
            await live.refresh_devices()
            await live.warm()
            # The primary has the device and its reading; the feed, reading the standby, not.
            assert device not in live.hub.latest
        await replayed(primary_pool, standby_pool)
        await live.refresh_devices()
        await live.warm()
        token = replica_keys[Role.READER]
        sse = await SseClient.open(f"{url}/api/v1/live?access_token={token}&device={device}")
        try:
            assert sse.status == 200
            snapshot = await sse.next_event()
            assert snapshot.event == "snapshot"
            items = snapshot.json()["items"]
            assert [(item["device_id"], item["values"]["pm2_5"]) for item in items] == [
                (device, 10.0)
            ]
        finally:
            await sse.close()


async def test_a_query_the_replica_cancels_is_a_503_to_retry(
    replicated_settings: Settings, replica_keys: dict[Role, str]
) -> None:
    """What a standby raises when its replay needs rows or locks a read holds (SQLSTATE 40001,
    or 40P01 for a buffer pin), rendered in the one error shape rather than as a 500."""
    from tests.api.conftest import serve

    async with serve(replicated_settings, bearer(replica_keys[Role.READER])) as (app, client):

        async def cancelled_read(sqlstate: str) -> None:
            error = asyncpg.PostgresError.new(
                {"C": sqlstate, "M": "canceling statement due to conflict with recovery"}
            )
            raise error

        app.add_api_route("/test/cancelled/{sqlstate}", cancelled_read)
        for sqlstate in ("40001", "40P01"):
            response = await client.get(f"/test/cancelled/{sqlstate}")
            assert response.status_code == 503
            assert response.json()["error"] == "database_conflict"
