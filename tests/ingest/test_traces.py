"""Nothing refused without a trace, on Mosquitto: what the broker refuses a device and what no
part of the contract routes reach /ingest/rejections with the device and topic; a reading
that contradicts a stored one is refused as a conflicting duplicate while an exact repeat is
only counted; and each device hears of its own rejections on its errors topic, bounded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import gmqtt
import httpx
import orjson
import pytest

from core.config import Settings
from core.mqtt import connect, make_client, wait_published
from devices.contract import Kind, errors_topic, telemetry_topic
from ingest import metrics
from ingest.app import RunningIngest
from tests.api.conftest import serve
from tests.api.test_credentials import as_device, commission
from tests.support import eventually, publish

NOT_AUTHORIZED = 135


def recent(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


@pytest.fixture
async def admin(
    settings: Settings, admin_headers: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings, admin_headers) as (_, client):
        yield client


async def rejections_of(pool: asyncpg.Pool, device_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT reason, detail, payload, topic FROM ingest_rejections WHERE device_id = $1"
        " ORDER BY received_at, reason",
        device_id,
    )


class Device:
    """A device logged in with its own login; what arrives on its subscriptions is kept."""

    def __init__(self, client: gmqtt.Client) -> None:
        self.client = client
        self.received: list[tuple[str, Any]] = []
        self.granted: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.received.append((topic, orjson.loads(payload)))
        self.arrived.set()
        return 0

    def _on_subscribe(self, client: Any, mid: int, qos: Any, props: Any) -> None:
        if not self.granted.done():
            self.granted.set_result(list(qos))

    async def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return await asyncio.wait_for(self.granted, 10)

    async def until_received(self, count: int, timeout_s: float = 10.0) -> None:
        while len(self.received) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout_s)


@asynccontextmanager
async def logged_in(settings: Settings, login: dict[str, Any]) -> AsyncIterator[Device]:
    endpoint = as_device(settings, login)
    client = make_client(endpoint, f"{login['username']}-{uuid.uuid4().hex[:6]}")
    client.set_config({"reconnect_retries": 0})
    await connect(client, endpoint)
    try:
        yield Device(client)
    finally:
        if client.is_connected:
            await client.disconnect()


async def test_a_publish_on_another_devices_topic_is_refused_and_recorded(
    ingest: RunningIngest,
    admin: httpx.AsyncClient,
    settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
) -> None:
    mine, theirs = f"trace-{unique}-a", f"trace-{unique}-b"
    login = await commission(admin, mine)
    await commission(admin, theirs)
    payload = orjson.dumps({"ts": recent(1), "pm2_5": 12.0})
    async with logged_in(settings, login) as device:
        device.client.publish(telemetry_topic(Kind.AIR, theirs), payload, qos=1)
        await wait_published(device.client)

    rows = await eventually(lambda: rejections_of(db_pool, mine), lambda found: len(found) >= 1)
    assert [(r["reason"], r["topic"], bytes(r["payload"])) for r in rows] == [
        ("topic_denied", telemetry_topic(Kind.AIR, theirs), payload)
    ]
    assert "publish on" in rows[0]["detail"]
    assert mine in rows[0]["detail"]
    assert await rejections_of(db_pool, theirs) == []
    # Nothing of it was stored as the other device's reading.
    assert (
        await db_pool.fetchval("SELECT count(*) FROM air_readings WHERE device_id = $1", theirs)
        == 0
    )


async def test_a_topic_no_part_of_the_contract_routes_is_refused_as_invalid_topic(
    ingest: RunningIngest,
    admin: httpx.AsyncClient,
    settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
) -> None:
    device_id = f"trace-{unique}-x"
    login = await commission(admin, device_id)
    extra = f"{telemetry_topic(Kind.AIR, device_id)}/extra"
    async with logged_in(settings, login) as device:
        device.client.publish(extra, b'{"pm2_5": 1}', qos=1)
        device.client.publish(f"alatau/air/{device_id}/config", b"x", qos=1)
        await wait_published(device.client)

    rows = await eventually(lambda: rejections_of(db_pool, device_id), lambda f: len(f) >= 2)
    assert sorted((r["reason"], r["topic"]) for r in rows) == [
        ("invalid_topic", f"alatau/air/{device_id}/config"),
        ("invalid_topic", extra),
    ]


async def test_a_conflicting_duplicate_is_refused_with_both_values_and_a_repeat_is_counted(
    ingest: RunningIngest,
    ingest_settings: Settings,
    admin: httpx.AsyncClient,
    db_pool: asyncpg.Pool,
    unique: str,
) -> None:
    device_id = f"trace-{unique}-dup"
    await commission(admin, device_id, kind="traffic")
    topic = telemetry_topic(Kind.TRAFFIC, device_id)
    ts = recent(60)
    first = {"ts": ts, "vehicle_count": 7, "avg_speed_kmh": 41.5}
    await publish(ingest_settings, [(topic, orjson.dumps(first))])
    stored = await eventually(
        lambda: db_pool.fetch(
            "SELECT vehicle_count FROM traffic_readings WHERE device_id = $1", device_id
        ),
        lambda found: len(found) == 1,
    )
    assert [r["vehicle_count"] for r in stored] == [7]

    duplicates_before = ingest.service.totals.duplicates
    other = {"ts": ts, "vehicle_count": 9, "avg_speed_kmh": 41.5}
    # The exact repeat (a redelivery: counted, not refused) and a contradicting one.
    await publish(ingest_settings, [(topic, orjson.dumps(first)), (topic, orjson.dumps(other))])
    rows = await eventually(lambda: rejections_of(db_pool, device_id), lambda f: len(f) >= 1)
    await eventually(
        lambda: asyncio.sleep(0, ingest.service.totals.duplicates - duplicates_before),
        lambda repeated: repeated >= 1,
    )
    assert [(r["reason"], r["topic"]) for r in rows] == [("conflicting_duplicate", topic)]
    assert '"vehicle_count":7' in rows[0]["detail"]
    assert '"vehicle_count":9' in rows[0]["detail"]
    assert orjson.loads(rows[0]["payload"])["vehicle_count"] == 9
    assert ingest.service.totals.duplicates - duplicates_before == 1
    still = await db_pool.fetch(
        "SELECT vehicle_count FROM traffic_readings WHERE device_id = $1", device_id
    )
    assert [r["vehicle_count"] for r in still] == [7]


async def test_a_device_hears_of_its_rejections_and_no_other_device_may_listen(
    ingest: RunningIngest,
    admin: httpx.AsyncClient,
    settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
) -> None:
    mine, other = f"trace-{unique}-echo", f"trace-{unique}-spy"
    login = await commission(admin, mine)
    spy_login = await commission(admin, other)
    errors = errors_topic(Kind.AIR, mine)
    ts = recent(5)
    async with logged_in(settings, login) as device, logged_in(settings, spy_login) as spy:
        assert await device.subscribe(errors) == [1]
        assert await spy.subscribe(errors) == [NOT_AUTHORIZED]
        device.client.publish(
            telemetry_topic(Kind.AIR, mine), orjson.dumps({"ts": ts, "pm2_5": 9000.0}), qos=1
        )
        await device.until_received(1)
        # The spy's refused subscription is itself on record, with the topic it wanted.
        spied = await eventually(lambda: rejections_of(db_pool, other), lambda f: len(f) >= 1)
    [(topic, echo)] = device.received
    assert topic == errors
    assert (echo["reason"], echo["ts"], echo["topic"]) == (
        "out_of_range",
        ts,
        telemetry_topic(Kind.AIR, mine),
    )
    assert "pm2_5" in echo["detail"]
    assert spy.received == []
    assert [(r["reason"], r["topic"]) for r in spied] == [("topic_denied", errors)]
    assert "subscribe to" in spied[0]["detail"]


async def test_echoes_are_bounded_per_device_and_the_rest_counted(
    ingest: RunningIngest,
    ingest_settings: Settings,
    admin: httpx.AsyncClient,
    settings: Settings,
    unique: str,
) -> None:
    device_id = f"trace-{unique}-flood"
    login = await commission(admin, device_id)
    burst = ingest_settings.ingest.echo_burst
    bad = [{"ts": recent(100 - i), "pm2_5": -1.0} for i in range(burst + 10)]
    dropped_before = metrics.ECHOES_DROPPED._value.get()
    async with logged_in(settings, login) as device:
        assert await device.subscribe(errors_topic(Kind.AIR, device_id)) == [1]
        # One message, so one batch: the bucket is full once, then empty.
        device.client.publish(telemetry_topic(Kind.AIR, device_id), orjson.dumps(bad), qos=1)
        await device.until_received(burst)
        dropped = await eventually(
            lambda: asyncio.sleep(0, metrics.ECHOES_DROPPED._value.get() - dropped_before),
            lambda n: n >= 10,
        )
    assert len(device.received) == burst
    assert dropped == 10
    assert [echo["ts"] for _, echo in device.received] == [r["ts"] for r in bad[:burst]]


async def test_a_refused_topic_with_quotes_and_a_binary_payload_is_kept_as_sent(
    ingest: RunningIngest,
    admin: httpx.AsyncClient,
    settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
) -> None:
    device_id = f"trace-{unique}-odd"
    login = await commission(admin, device_id)
    odd = 'alatau/air/"quoted\\backslash"/telemetry'
    payload = bytes(range(256)) * 20  # binary, longer than the 4 KiB the notice keeps
    async with logged_in(settings, login) as device:
        device.client.publish(odd, payload, qos=1)
        await wait_published(device.client)
    rows = await eventually(
        lambda: rejections_of(db_pool, device_id), lambda found: len(found) >= 1
    )
    assert [(r["reason"], r["topic"]) for r in rows] == [("topic_denied", odd)]
    assert bytes(rows[0]["payload"]) == payload[:4096]
    assert "the first 4096 of 5120 bytes kept" in rows[0]["detail"]
