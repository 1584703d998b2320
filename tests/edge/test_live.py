"""The api's live feed on the city edge: a queue of the replica's own, bound to what its clients
filter on, carrying devices' readings from any node to an SSE client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from core.config import Settings
from stack.rabbitmq import RabbitCluster
from tests.edge.authserver import AuthServer
from tests.edge.conftest import EdgeApi, serving_edge_api
from tests.edge.device import Device, poll
from tests.edge.test_logins import commission, device
from tests.live.sse import SseClient


@pytest.fixture(scope="module")
async def live_edge_api(
    edge: RabbitCluster,
    auth_server: AuthServer,
    settings: Settings,
    admin_headers: dict[str, str],
) -> AsyncIterator[EdgeApi]:
    async with serving_edge_api(edge, auth_server, settings, admin_headers, live=True) as api:
        yield api


def live_bindings(admin: httpx.Client) -> set[str]:
    """Routing keys bound to the api replicas' own live queues."""
    bindings = admin.get("/bindings").json()
    return {
        b["routing_key"]
        for b in bindings
        if b["destination"].startswith("alatau.live.") and b["source"] == "amq.topic"
    }


async def next_reading(client: SseClient) -> dict[str, Any]:
    while True:
        event = await client.next_event(10)
        if event.event == "reading":
            data: dict[str, Any] = event.json()
            return data


async def test_a_device_filter_binds_its_topic_and_streams_its_readings(
    live_edge_api: EdgeApi, reader_key: str
) -> None:
    login = await commission(live_edge_api)
    device_id = login["username"]
    key = f"alatau.*.{device_id}.telemetry"
    sse = await SseClient.open(
        f"{live_edge_api.url}/api/v1/live?access_token={reader_key}&device={device_id}"
    )
    with live_edge_api.edge.admin_client() as admin:
        try:
            assert (await sse.next_event()).event == "snapshot"
            bound = await asyncio.to_thread(poll, lambda: live_bindings(admin), lambda b: key in b)
            assert key in bound
            me: Device = device(login)
            assert not (
                await asyncio.to_thread(me.connect, live_edge_api.edge.mqtt_port(3))
            ).is_failure
            reading = {"ts": datetime.now(UTC).isoformat(), "vehicle_count": 7, "interval_s": 60.0}
            me.publish(f"{login['topic_prefix']}telemetry", orjson.dumps(reading))
            data = await next_reading(sse)
            assert (data["device_id"], data["values"]["vehicle_count"]) == (device_id, 7)
            me.close()
        finally:
            await sse.close()
        # The last client of that filter gone, its binding goes too.
        left = await asyncio.to_thread(poll, lambda: live_bindings(admin), lambda b: key not in b)
        assert key not in left
