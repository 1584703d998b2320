"""Live feeds against the real broker: SSE and WebSocket, snapshot, resume, validation,
conflation for a slow client, heartbeats and the connection lifetime."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

from core.config import Settings
from core.mqtt import connect, make_client, publish_when_possible, wait_published
from devices.contract import District, Kind, telemetry_topic
from tests.live.conftest import quick_settings, running_api
from tests.live.sse import Event, SseClient
from tests.support import eventually, publish, register

UTC_SPELLING = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def reading(value: float, ts: datetime | None = None) -> bytes:
    moment = ts or datetime.now(UTC)
    return orjson.dumps({"ts": moment.isoformat(), "pm2_5": value, "humidity_pct": 40.0})


async def next_reading(client: SseClient, timeout_s: float = 10.0) -> Event:
    while True:
        event = await client.next_event(timeout_s)
        if event.event == "reading":
            return event


def ws_url(live_url: str, token: str, query: str) -> str:
    """A WebSocket URL with the key as a browser sends it (it cannot set headers)."""
    return live_url.replace("http://", "ws://") + f"/api/v1/live/ws?access_token={token}&{query}"


async def ws_next(ws: Any, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if message["type"] == kind:
            return dict(message)


async def test_a_published_reading_reaches_an_sse_and_a_websocket_client(
    settings: Settings,
    db_pool: asyncpg.Pool,
    live_url: str,
    unique: str,
    reader_key: str,
    admin_headers: dict[str, str],
) -> None:
    device = f"live-{unique}"
    await register(db_pool, device, Kind.AIR, District.GREEN)
    sse = await SseClient.open(f"{live_url}/api/v1/live?access_token={reader_key}&device={device}")
    assert sse.status == 200
    assert sse.headers["content-type"].startswith("text/event-stream")
    async with websockets.connect(ws_url(live_url, reader_key, f"device={device}")) as ws:
        assert (await sse.next_event()).event == "snapshot"
        assert (await ws_next(ws, "snapshot"))["items"] == []
        await publish(settings, [(telemetry_topic(Kind.AIR, device), reading(42.5))])
        event = await next_reading(sse)
        message = await ws_next(ws, "reading")
        async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as http:
            exported = (await http.get("/metrics")).text
    assert 'alatau_live_clients{transport="sse"}' in exported
    assert 'alatau_live_clients{transport="websocket"}' in exported
    await sse.close()
    for data in (event.json(), message["data"]):
        assert data["device_id"] == device
        assert data["kind"] == "air"
        assert data["district"] == "green"
        assert data["values"]["pm2_5"] == 42.5
        # The REST spelling: UTC, Z, six fraction digits (never +00:00 or a bare second).
        assert UTC_SPELLING.fullmatch(data["ts"]), data["ts"]
        assert UTC_SPELLING.fullmatch(data["received_at"]), data["received_at"]
    assert event.id is not None
    assert message["id"] == event.id


async def test_snapshot_filters_and_resume_with_last_event_id(
    settings: Settings, db_pool: asyncpg.Pool, live_url: str, unique: str, reader_key: str
) -> None:
    green, gate = f"snap-green-{unique}", f"snap-gate-{unique}"
    await register(db_pool, green, Kind.AIR, District.GREEN)
    await register(db_pool, gate, Kind.AIR, District.GATE)
    watcher = await SseClient.open(
        f"{live_url}/api/v1/live?access_token={reader_key}&device={green},{gate}"
    )
    await watcher.next_event()
    await publish(
        settings,
        [
            (telemetry_topic(Kind.AIR, green), reading(10.0)),
            (telemetry_topic(Kind.AIR, gate), reading(20.0)),
        ],
    )
    seen = {(await next_reading(watcher)).json()["device_id"] for _ in range(2)}
    await watcher.close()
    assert seen == {green, gate}

    query = f"device={green}&device={gate}&district=green&kind=air"
    first = await SseClient.open(f"{live_url}/api/v1/live?access_token={reader_key}&{query}")
    snapshot = await first.next_event()
    await first.close()
    assert snapshot.event == "snapshot"
    assert [item["device_id"] for item in snapshot.json()["items"]] == [green]
    assert snapshot.id is not None

    # Nothing changed since the snapshot: a resumed feed starts with an empty snapshot...
    resumed = await SseClient.open(
        f"{live_url}/api/v1/live?access_token={reader_key}&{query}",
        headers={"Last-Event-ID": snapshot.id},
    )
    assert (await resumed.next_event()).json()["items"] == []
    await resumed.close()
    # ...and after a change, with only what changed.
    watcher = await SseClient.open(f"{live_url}/api/v1/live?access_token={reader_key}&{query}")
    assert (await watcher.next_event()).event == "snapshot"
    later = datetime.now(UTC) + timedelta(seconds=1)
    await publish(settings, [(telemetry_topic(Kind.AIR, green), reading(11.0, later))])
    # The hub records a reading before it offers it to any client: once a live client of this
    # replica has it, a feed resumed there must find it.
    assert (await next_reading(watcher)).json()["values"]["pm2_5"] == 11.0
    await watcher.close()
    resumed = await SseClient.open(
        f"{live_url}/api/v1/live?access_token={reader_key}&{query}",
        headers={"Last-Event-ID": snapshot.id},
    )
    items = (await resumed.next_event()).json()["items"]
    await resumed.close()
    assert [(item["device_id"], item["values"]["pm2_5"]) for item in items] == [(green, 11.0)]


async def test_only_valid_readings_of_registered_enabled_devices_are_streamed(
    settings: Settings, db_pool: asyncpg.Pool, live_url: str, unique: str, reader_key: str
) -> None:
    good, stranger, disabled = f"ok-{unique}", f"nobody-{unique}", f"off-{unique}"
    await register(db_pool, good, Kind.AIR)
    await register(db_pool, disabled, Kind.AIR, enabled=False)
    client = await SseClient.open(
        f"{live_url}/api/v1/live?access_token={reader_key}&device={good},{stranger},{disabled}"
    )
    await client.next_event()
    await publish(
        settings,
        [
            (telemetry_topic(Kind.AIR, good), b'{"ts": 0, "pm2_5": -1}'),
            (telemetry_topic(Kind.AIR, good), b"not json"),
            (telemetry_topic(Kind.AIR, good), orjson.dumps({"ts": "now", "pm2_5": 1.0})),
            (telemetry_topic(Kind.TRAFFIC, good), orjson.dumps({"ts": 1, "vehicle_count": 1})),
            (telemetry_topic(Kind.AIR, stranger), reading(5.0)),
            (telemetry_topic(Kind.AIR, disabled), reading(6.0)),
            (telemetry_topic(Kind.AIR, good), reading(7.0)),
        ],
    )
    event = await next_reading(client)
    await client.close()
    assert event.json()["device_id"] == good
    assert event.json()["values"]["pm2_5"] == 7.0


async def _flood(settings: Settings, devices: list[str], per_device: int) -> dict[str, float]:
    """Publish ``per_device`` readings to each device, interleaved, with rising ts and values."""
    client = make_client(settings.mqtt_as(settings.simulator), f"flood-{devices[0]}")
    await connect(client, settings.mqtt_as(settings.simulator))
    start = datetime.now(UTC) - timedelta(minutes=30)
    last: dict[str, float] = {}
    try:
        for i in range(per_device):
            ts = (start + timedelta(milliseconds=100 * i)).isoformat()
            for n, device in enumerate(devices):
                value = float(i * 100 + n)
                payload = orjson.dumps({"ts": ts, "pm2_5": value % 5000})
                await publish_when_possible(client, telemetry_topic(Kind.AIR, device), payload)
                last[device] = value % 5000
            if i % 10 == 9:
                await asyncio.sleep(0.02)  # a steady stream rather than one burst
        await asyncio.wait_for(wait_published(client), timeout=60)
    finally:
        await client.disconnect()
    return last


async def test_a_slow_client_gets_the_newest_value_per_device_and_does_not_delay_others(
    settings: Settings, db_pool: asyncpg.Pool, live_url: str, unique: str, reader_key: str
) -> None:
    devices = [f"flood-{unique}-{n:02d}" for n in range(20)]
    for device in devices:
        await register(db_pool, device, Kind.AIR)
    query = f"device={','.join(devices)}"
    slow = await SseClient.open(
        f"{live_url}/api/v1/live?access_token={reader_key}&{query}", receive_buffer=4096
    )
    fast = await SseClient.open(f"{live_url}/api/v1/live?access_token={reader_key}&{query}")
    assert (await slow.next_event()).event == "snapshot"
    assert (await fast.next_event()).event == "snapshot"

    fast_values: dict[str, float] = {}
    fast_events = 0

    async def read_fast() -> None:
        nonlocal fast_events
        while True:
            data = (await next_reading(fast, timeout_s=30)).json()
            fast_values[data["device_id"]] = data["values"]["pm2_5"]
            fast_events += 1

    reader = asyncio.create_task(read_fast())
    last = await _flood(settings, devices, per_device=500)  # 10,000 readings
    published_at = time.monotonic()

    async def fast_view() -> dict[str, float]:
        return dict(fast_values)

    await eventually(fast_view, lambda values: values == last, timeout_s=10)
    fast_done = time.monotonic()
    reader.cancel()
    # The fast client kept up while the slow one read nothing at all, for the whole flood.
    assert fast_values == last
    assert fast_done - published_at < 5.0

    # Nothing to wait for before the slow client reads: the hub offers each reading to every
    # client in the same call, so once the fast client has the last values the slow client's
    # queue holds them too (conflated), behind what its socket buffers already took.
    slow_values: dict[str, float] = {}
    slow_events = 0
    while slow_values != last:
        data = (await next_reading(slow, timeout_s=10)).json()
        slow_values[data["device_id"]] = data["values"]["pm2_5"]
        slow_events += 1
    await slow.close()
    await fast.close()
    logging.getLogger(__name__).warning(
        "flood: fast client %d events, done %.2f s after the last publish; slow client %d",
        fast_events,
        fast_done - published_at,
        slow_events,
    )
    assert slow_values == last
    # Conflated: far fewer events than readings, bounded by what the socket buffers held.
    assert slow_events < 5_000, slow_events
    assert slow_events < fast_events


async def test_heartbeats_and_the_maximum_lifetime_with_a_reconnect_hint(
    settings: Settings, db_pool: asyncpg.Pool, reader_key: str
) -> None:
    short = quick_settings(settings, heartbeat_s=0.3, max_connection_s=1.5, reconnect_ms=250)
    async with running_api(short) as url:
        client = await SseClient.open(f"{url}/api/v1/live?access_token={reader_key}&kind=energy")
        events = []
        try:
            while True:
                events.append(await client.next_event(timeout_s=5))
        except EOFError:
            pass
        await client.close()
        kinds = [event.event for event in events]
        assert kinds[0] == "snapshot"
        assert "heartbeat" in kinds
        beats = [event.json()["ts"] for event in events if event.event == "heartbeat"]
        assert all(UTC_SPELLING.fullmatch(ts) for ts in beats), beats
        assert kinds[-1] == "reconnect"
        assert events[-1].json() == {"after_ms": 250}

        async with websockets.connect(ws_url(url, reader_key, "kind=energy")) as ws:
            types, ws_beats = [], []
            async for raw in ws:
                message = orjson.loads(raw)
                types.append(message["type"])
                if message["type"] == "heartbeat":
                    ws_beats.append(message["data"])
            assert ws.close_code == 1001
        assert types[0] == "snapshot"
        assert "heartbeat" in types
        assert all(UTC_SPELLING.fullmatch(ts) for ts in ws_beats), ws_beats
        assert types[-1] == "reconnect"
