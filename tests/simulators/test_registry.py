"""Registration through the API: created and already-existing are fine, the rest is an error."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from core.config import Settings
from devices.contract import Kind
from simulators.fleet import build_fleet
from simulators.models import TrafficModel
from simulators.registry import RegistrationError, register_devices
from simulators.service import Simulation


def login(device_id: str, password: str) -> dict[str, str]:
    return {"username": device_id, "password": f"{password}-{device_id}", "topic_prefix": "x/"}


class FakeApi:
    """Answers ``POST /api/v1/devices`` and ``POST .../credentials`` like the registry, with
    each device's login, counting concurrent requests."""

    def __init__(self, existing: set[str] | None = None, fail: str | None = None) -> None:
        self.existing = existing or set()
        self.fail = fail
        self.bodies: list[dict[str, Any]] = []
        self.rotated: list[str] = []
        self.headers: list[httpx.Headers] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # A request takes a moment, as over a network: requests overlap and are counted.
            await asyncio.sleep(0.005)
            self.headers.append(request.headers)
            rotate = re.fullmatch(r"/api/v1/devices/([^/]+)/credentials", request.url.path)
            if rotate:
                self.rotated.append(rotate[1])
                return httpx.Response(200, json=login(rotate[1], "rotated"))
            assert request.url.path == "/api/v1/devices"
            body = json.loads(request.content)
            self.bodies.append(body)
            if body["device_id"] == self.fail:
                return httpx.Response(422, json={"error": "validation", "detail": "nope"})
            if body["device_id"] in self.existing:
                return httpx.Response(409, json={"error": "conflict", "detail": "exists"})
            self.existing.add(body["device_id"])
            return httpx.Response(201, json={**body, "mqtt": login(body["device_id"], "new")})
        finally:
            self.in_flight -= 1


async def test_every_device_is_posted_with_its_kind_district_and_location() -> None:
    fleet = build_fleet(10, seed=1)
    api = FakeApi(existing={fleet[0].device_id, fleet[1].device_id})
    result = await register_devices(
        "http://api.test/", fleet, concurrency=5, transport=httpx.MockTransport(api)
    )
    assert (result.created, result.existing) == (28, 2)
    # Every device gets a login: new ones from the registration, existing ones a rotated one.
    assert sorted(api.rotated) == sorted([fleet[0].device_id, fleet[1].device_id])
    assert result.logins[fleet[0].device_id].password == f"rotated-{fleet[0].device_id}"
    assert result.logins[fleet[2].device_id].password == f"new-{fleet[2].device_id}"
    assert set(result.logins) == {device.device_id for device in fleet}
    assert sorted(body["device_id"] for body in api.bodies) == sorted(d.device_id for d in fleet)
    first = next(body for body in api.bodies if body["device_id"] == fleet[2].device_id)
    assert first == {
        "device_id": fleet[2].device_id,
        "kind": fleet[2].kind.value,
        "district": fleet[2].district.value,
        "location": {"lat": fleet[2].lat, "lon": fleet[2].lon},
        "metadata": {"simulated": True},
    }
    assert 1 < api.max_in_flight <= 5


async def test_registering_twice_is_fine() -> None:
    fleet = build_fleet(3, seed=1)
    api = FakeApi()
    transport = httpx.MockTransport(api)
    await register_devices("http://api.test", fleet, transport=transport)
    again = await register_devices("http://api.test", fleet, transport=transport)
    assert (again.created, again.existing) == (0, 9)


async def test_an_api_key_is_sent_as_a_bearer_token() -> None:
    api = FakeApi()
    await register_devices(
        "http://api.test",
        build_fleet(1, seed=1),
        api_key="secret",
        transport=httpx.MockTransport(api),
    )
    assert {headers["authorization"] for headers in api.headers} == {"Bearer secret"}


async def test_any_other_answer_is_an_error() -> None:
    fleet = build_fleet(4, seed=1)
    api = FakeApi(fail=fleet[5].device_id)
    with pytest.raises(RegistrationError, match=rf"{fleet[5].device_id}.*HTTP 422"):
        await register_devices("http://api.test", fleet, transport=httpx.MockTransport(api))


async def test_an_unreachable_api_is_an_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RegistrationError, match="could not register"):
        await register_devices(
            "http://api.test", build_fleet(1, seed=1), transport=httpx.MockTransport(refuse)
        )


async def test_a_simulation_registers_each_devices_reading_period_and_free_flow_speed(
    settings: Settings,
) -> None:
    fleet = build_fleet(3, seed=4)
    # Two readings a second, at 30x: readings are 15 s apart in reading time.
    simulation = Simulation(settings, fleet, rate_hz=2.0, seed=4, time_step_s=15.0)
    api = FakeApi()
    await register_devices(
        "http://api.test/",
        fleet,
        transport=httpx.MockTransport(api),
        metadata=simulation.registry_metadata(),
    )
    metadata = {body["device_id"]: body["metadata"] for body in api.bodies}
    assert len(metadata) == len(fleet)
    for device in fleet:
        sent = metadata[device.device_id]
        assert sent["simulated"] is True
        assert sent["expected_interval_s"] == 15.0
        if device.kind is Kind.TRAFFIC:
            # The model's own free-flow speed: its district's, varied by at most 15 % per road.
            assert sent["free_flow_kmh"] == TrafficModel(device, 4).free_flow_kmh
            assert 42.0 <= sent["free_flow_kmh"] <= 81.0
        else:
            assert "free_flow_kmh" not in sent
    roads = {metadata[d.device_id]["free_flow_kmh"] for d in fleet if d.kind is Kind.TRAFFIC}
    assert len(roads) > 1  # each road its own
