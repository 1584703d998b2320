"""Each api replica subscribes on its own: two replicas both stream the same reading; and the
hub's conflation as a unit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from api.live.hub import LiveHub
from api.live.schemas import LiveFilter
from core.config import Settings
from devices.contract import District, Kind, telemetry_topic
from tests.live.conftest import quick_settings, running_api
from tests.live.sse import SseClient
from tests.live.test_live import next_reading, reading
from tests.support import publish, register


async def test_two_api_replicas_each_get_the_stream(
    settings: Settings, db_pool: asyncpg.Pool, live_url: str, unique: str, reader_key: str
) -> None:
    device = f"both-{unique}"
    await register(db_pool, device, Kind.AIR, District.GOLDEN)
    async with running_api(quick_settings(settings)) as other_url:
        clients = [
            await SseClient.open(f"{url}/api/v1/live?access_token={reader_key}&device={device}")
            for url in (live_url, other_url)
        ]
        for client in clients:
            assert (await client.next_event()).event == "snapshot"
        await publish(settings, [(telemetry_topic(Kind.AIR, device), reading(33.0))])
        values = [(await next_reading(client)).json()["values"]["pm2_5"] for client in clients]
        for client in clients:
            await client.close()
    assert values == [33.0, 33.0]


def test_a_subscriber_holds_only_the_newest_reading_per_device() -> None:
    hub = LiveHub("unit")
    everything = hub.subscribe(LiveFilter())
    only_b = hub.subscribe(LiveFilter(devices=frozenset({"b"})))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(1000):
        for device in ("a", "b"):
            hub.publish(
                device_id=device,
                kind=Kind.AIR,
                district=District.GATE,
                ts=start + timedelta(seconds=i),
                received_at=start,
                values={"pm2_5": float(i)},
            )
    # An older reading than the newest is not news.
    assert (
        hub.publish(
            device_id="a",
            kind=Kind.AIR,
            district=District.GATE,
            ts=start,
            received_at=start,
            values={"pm2_5": -1.0},
        )
        is None
    )
    assert everything.backlog == 2
    assert [(r.device_id, r.values["pm2_5"]) for r in everything.take()] == [
        ("a", 999.0),
        ("b", 999.0),
    ]
    assert everything.backlog == 0
    assert [r.device_id for r in only_b.take()] == ["b"]
    assert everything.conflated == 1998
    resume = hub.resume_point(hub.event_id(hub.last_seq - 1))
    assert [r.device_id for r in hub.snapshot(LiveFilter(), resume)] == ["b"]
    assert hub.resume_point("another-replica.5") == 0
