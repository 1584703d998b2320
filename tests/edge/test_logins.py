"""Device logins on the city edge, answered by the real api from the registry.

The cluster's HTTP auth backend asks the api's /internal/broker endpoints (through the tests'
auth server, which passes on every question about a user it does not know). Devices are
commissioned over the REST API as an operator would, and then:
a device with its own secret, id and client id logs in and publishes on its own topics; a wrong,
rotated or disabled secret is refused; a device publishing on another device's topic is dropped
and the refusal is kept as a ``topic_denied`` rejection."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import httpx
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from tests.edge.conftest import AUTH_CACHE_TTL_MS, EdgeApi
from tests.edge.device import Device, poll


async def commission(api: EdgeApi) -> dict[str, str]:
    """A traffic device registered over the REST API; its login (shown once)."""
    device_id = f"edge-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers) as client:
        response = await client.post(
            "/api/v1/devices", json={"device_id": device_id, "kind": "traffic", "district": "gate"}
        )
    assert response.status_code == 201, response.text
    login: dict[str, str] = response.json()["mqtt"]
    return login


def device(
    login: dict[str, str], password: str | None = None, client_id: str | None = None
) -> Device:
    return Device(login["username"], password or login["password"], client_id or login["username"])


async def connect(api: EdgeApi, who: Device, node: int = 1) -> ReasonCode:
    return await asyncio.to_thread(who.connect, api.edge.mqtt_port(node))


async def refused_within(api: EdgeApi, make: Device, timeout_s: float) -> bool:
    """Whether a login of ``make``'s kind is refused before ``timeout_s`` (the broker may keep
    an earlier allow for its cache's lifetime)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        attempt = Device(make.username, make.password, make.client_id)
        try:
            code = await connect(api, attempt)
        except ConnectionError:
            return True
        attempt.close()
        if code.is_failure:
            return True
        await asyncio.sleep(0.2)  # the next attempt, as a device retrying its login
    return False


async def test_a_commissioned_device_logs_in_and_publishes_on_its_own_topic(
    edge_api: EdgeApi,
) -> None:
    login = await commission(edge_api)
    assert login["topic_prefix"] == f"alatau/traffic/{login['username']}/"
    me = device(login)
    assert not (await connect(edge_api, me, node=2)).is_failure
    mid = me.publish(f"{login['topic_prefix']}telemetry", b'{"ts": 0}')
    assert await asyncio.to_thread(me.wait_acked, [mid])
    me.close()


@pytest.mark.parametrize("wrong", ["password", "client_id", "unknown"])
async def test_a_wrong_secret_client_id_or_device_is_refused(edge_api: EdgeApi, wrong: str) -> None:
    login = await commission(edge_api)
    if wrong == "password":
        who = device(login, password=secrets.token_urlsafe(24))
    elif wrong == "client_id":
        who = device(login, client_id=f"{login['username']}-other")
    else:
        who = Device(f"nobody-{uuid.uuid4().hex[:8]}", login["password"], "nobody")
    assert (await connect(edge_api, who)).is_failure
    who.stop()


async def test_a_rotated_secret_is_refused_and_its_connection_dropped(edge_api: EdgeApi) -> None:
    login = await commission(edge_api)
    old = device(login)
    assert not (await connect(edge_api, old)).is_failure
    async with httpx.AsyncClient(base_url=edge_api.url, headers=edge_api.headers) as client:
        response = await client.post(f"/api/v1/devices/{login['username']}/credentials")
    assert response.status_code == 200
    new = response.json()
    assert await asyncio.to_thread(old.wait_for, lambda: bool(old.disconnects), 10)
    assert await refused_within(edge_api, device(login), AUTH_CACHE_TTL_MS / 1000 + 5)
    fresh = device(new)
    assert not (await connect(edge_api, fresh, node=3)).is_failure
    fresh.close()


async def test_a_disabled_device_is_dropped_and_refused(edge_api: EdgeApi) -> None:
    login = await commission(edge_api)
    me = device(login)
    assert not (await connect(edge_api, me)).is_failure
    async with httpx.AsyncClient(base_url=edge_api.url, headers=edge_api.headers) as client:
        response = await client.delete(f"/api/v1/devices/{login['username']}")
    assert response.status_code == 200
    assert await asyncio.to_thread(me.wait_for, lambda: bool(me.disconnects), 10)
    assert await refused_within(edge_api, me, AUTH_CACHE_TTL_MS / 1000 + 5)
    # The device's own client keeps reconnecting: what its cached allow let back in is dropped
    # again once the cache has expired, and then the broker holds no connection of it.
    with edge_api.edge.admin_client() as admin:
        held = await asyncio.to_thread(
            poll,
            lambda: admin.get(f"/connections/username/{login['username']}").json(),
            lambda conns: conns == [],
            AUTH_CACHE_TTL_MS / 1000 + 10,
        )
    assert held == []
    me.stop()


async def test_another_devices_topic_is_refused_and_kept_as_a_rejection(
    edge_api: EdgeApi,
) -> None:
    mine, theirs = await commission(edge_api), await commission(edge_api)
    me = device(mine)
    assert not (await connect(edge_api, me)).is_failure
    foreign = f"{theirs['topic_prefix']}telemetry"
    mid = me.publish(foreign, b'{"ts": 0}')
    assert await asyncio.to_thread(me.wait_for, lambda: bool(me.disconnects), 10)
    assert mid not in me.acked
    me.stop()
    async with httpx.AsyncClient(base_url=edge_api.url, headers=edge_api.headers) as client:
        response = await client.get(
            "/api/v1/ingest/rejections", params={"device_id": mine["username"]}
        )
    items = response.json()["items"]
    assert [(r["reason"], r["topic"]) for r in items] == [("topic_denied", foreign)]
    # Subscribing to the other's errors topic is refused as well; its own is granted.
    me = device(mine)
    assert not (await connect(edge_api, me)).is_failure
    _, own = me.client.subscribe(f"{mine['topic_prefix']}errors", qos=1)
    assert own is not None
    assert await asyncio.to_thread(me.wait_for, lambda: own in me.subscribed, 10)
    assert me.subscribed[own] == [1]
    me.close()
