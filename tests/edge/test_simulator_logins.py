"""Simulated devices on the city edge log in as firmware does: a refused CONNECT is retried
with backoff until the broker lets the device in, instead of being taken as final."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx

from core.config import Settings
from devices.schemas import MqttLogin
from simulators.fleet import build_fleet
from simulators.schemas import SimulationStats
from simulators.service import Simulation
from tests.edge.conftest import EdgeApi
from tests.support import eventually


def refusals(stats: SimulationStats) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return stats.connect_refusals

    return probe


async def test_a_refused_login_is_retried_until_the_device_is_let_in(
    edge_api: EdgeApi, settings: Settings
) -> None:
    device = build_fleet(1, seed=5, prefix=f"r{uuid.uuid4().hex[:6]}")[0]
    async with httpx.AsyncClient(base_url=edge_api.url, headers=edge_api.headers) as client:
        created = await client.post(
            "/api/v1/devices",
            json={"device_id": device.device_id, "kind": device.kind, "district": device.district},
        )
        assert created.status_code == 201, created.text
        login = MqttLogin.model_validate(created.json()["mqtt"])
        # Disabled: the broker refuses its login (CONNACK "bad username or password").
        disabled = await client.patch(
            f"/api/v1/devices/{device.device_id}", json={"enabled": False}
        )
        assert disabled.status_code == 200, disabled.text

        edge = edge_api.edge
        on_edge = settings.model_copy(
            update={
                "mqtt_url": ",".join(edge.mqtt_url(i) for i in edge.nodes),
                "mqtt_protocol": "3.1.1",
                "simulator": settings.simulator.model_copy(
                    update={"connect_backoff_s": 0.2, "connect_backoff_max_s": 0.5}
                ),
            }
        )
        simulation = Simulation(
            on_edge, [device], rate_hz=5.0, count=1, logins={device.device_id: login}
        )
        running = asyncio.create_task(simulation.run())
        stats = simulation.stats
        refused = await eventually(refusals(stats), lambda n: n >= 1)
        assert refused >= 1
        assert stats.connected == 0
        assert not running.done()

        enabled = await client.patch(f"/api/v1/devices/{device.device_id}", json={"enabled": True})
        assert enabled.status_code == 200, enabled.text
        stats = await asyncio.wait_for(running, timeout=60)

    # Let in on a later attempt: its one reading was acknowledged, nothing else went wrong.
    assert stats.readings_sent == 1
    assert stats.messages_sent == 1
    assert stats.errors == 0
    assert stats.connect_refusals >= refused
    assert stats.connected == 0  # disconnected cleanly at the end
