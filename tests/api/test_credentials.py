"""Device logins at the real broker: issued by the registry, enforced by Mosquitto.

A device may publish only on its own topics; a wrong or rotated password, a disabled device and
an anonymous client are refused; the service identities cannot publish telemetry."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import gmqtt
import httpx
import pytest
from gmqtt.mqtt.handler import MQTTConnectError

from core.config import MqttEndpoint, Settings
from core.mqtt import connect, make_client, wait_published
from devices.contract import Kind, telemetry_topic
from stack.services import MosquittoBroker
from tests.api.test_devices import new_device

NOT_AUTHORIZED = 135
BAD_USERNAME_OR_PASSWORD = 134


def as_device(settings: Settings, login: dict[str, Any]) -> MqttEndpoint:
    return settings.mqtt.model_copy(
        update={"username": login["username"], "password": login["password"]}
    )


async def refusal(endpoint: MqttEndpoint) -> int | None:
    """The CONNACK reason code when the broker refuses the login, None when it accepts it."""
    client = gmqtt.Client(f"probe-{uuid.uuid4().hex[:8]}")
    if endpoint.username is not None:
        client.set_auth_credentials(endpoint.username, endpoint.password)
    client.set_config({"reconnect_retries": 0})
    try:
        await connect(client, endpoint)
    except MQTTConnectError as exc:
        code: int = exc._code
        return code
    await client.disconnect()
    return None


class Watcher:
    """The messages the broker delivers on ``alatau/#`` (logged in as the api) for this test's
    devices: those whose topic holds ``marker``; other tests' retained statuses are not ours."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.topics: list[str] = []
        self.arrived = asyncio.Event()

    def on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        if self.marker in topic:
            self.topics.append(topic)
        self.arrived.set()
        return 0

    async def until(self, topic: str, timeout_s: float = 10.0) -> None:
        while topic not in self.topics:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout_s)


@asynccontextmanager
async def watching(settings: Settings, marker: str) -> AsyncIterator[Watcher]:
    watcher = Watcher(marker)
    subscribed = asyncio.Event()
    client = make_client(settings.mqtt_as(settings.api), f"watch-{uuid.uuid4().hex[:8]}")
    client.on_message = watcher.on_message
    client.on_subscribe = lambda *args: subscribed.set()
    await connect(client, settings.mqtt_as(settings.api))
    client.subscribe("alatau/#", qos=1)
    await asyncio.wait_for(subscribed.wait(), 10)
    try:
        yield watcher
    finally:
        await client.disconnect()


@asynccontextmanager
async def device_client(endpoint: MqttEndpoint, name: str) -> AsyncIterator[gmqtt.Client]:
    client = make_client(endpoint, f"{name}-{uuid.uuid4().hex[:6]}")
    client.set_config({"reconnect_retries": 0})
    await connect(client, endpoint)
    try:
        yield client
    finally:
        if client.is_connected:
            await client.disconnect()


async def dropped(client: gmqtt.Client, within_s: float = 5.0) -> bool:
    """Whether the broker closes the client's connection within ``within_s``."""
    gone = asyncio.Event()
    client.on_disconnect = lambda *args: gone.set()
    if client.is_connected:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), within_s)
    return not client.is_connected


async def commission(client: httpx.AsyncClient, device_id: str, **overrides: Any) -> Any:
    response = await client.post("/api/v1/devices", json=new_device(device_id, **overrides))
    assert response.status_code == 201, response.text
    return response.json()["mqtt"]


async def test_a_device_publishes_only_on_its_own_topics(
    client: httpx.AsyncClient, settings: Settings, unique: str
) -> None:
    mine, theirs = f"cred-{unique}-a", f"cred-{unique}-b"
    login = await commission(client, mine)
    await commission(client, theirs)
    assert login["topic_prefix"] == f"alatau/air/{mine}/"
    async with (
        watching(settings, unique) as watcher,
        device_client(as_device(settings, login), mine) as d,
    ):
        # One connection delivers in order: once the allowed message is through, the refused
        # ones would have arrived before it.
        d.publish(telemetry_topic(Kind.AIR, theirs), b"{}", qos=1)
        d.publish(f"alatau/traffic/{mine}/telemetry", b"{}", qos=1)  # its id, another kind
        d.publish(f"alatau/air/{mine}/telemetry", b"{}", qos=1)
        await wait_published(d)
        await watcher.until(f"alatau/air/{mine}/telemetry")
    assert watcher.topics == [f"alatau/air/{mine}/telemetry"]


async def test_wrong_password_anonymous_and_a_rotated_password_are_refused(
    client: httpx.AsyncClient, settings: Settings, unique: str
) -> None:
    device_id = f"cred-{unique}-rot"
    login = await commission(client, device_id)
    assert await refusal(as_device(settings, login)) is None
    assert await refusal(as_device(settings, {**login, "password": "guess"})) in {
        NOT_AUTHORIZED,
        BAD_USERNAME_OR_PASSWORD,
    }
    assert await refusal(settings.mqtt) in {NOT_AUTHORIZED, BAD_USERNAME_OR_PASSWORD}

    async with device_client(as_device(settings, login), device_id) as connected:
        response = await client.post(f"/api/v1/devices/{device_id}/credentials")
        assert response.status_code == 200, response.text
        rotated = response.json()
        assert rotated["username"] == device_id
        assert rotated["password"] != login["password"]
        # The connection made with the old password is dropped at once.
        assert await dropped(connected)
    assert await refusal(as_device(settings, login)) is not None
    assert await refusal(as_device(settings, rotated)) is None


async def test_a_disabled_device_is_disconnected_and_cannot_log_in_until_enabled(
    client: httpx.AsyncClient, settings: Settings, unique: str
) -> None:
    device_id = f"cred-{unique}-off"
    login = await commission(client, device_id)
    async with device_client(as_device(settings, login), device_id) as connected:
        assert (await client.delete(f"/api/v1/devices/{device_id}")).status_code == 200
        assert await dropped(connected)
    assert await refusal(as_device(settings, login)) is not None

    response = await client.patch(f"/api/v1/devices/{device_id}", json={"enabled": True})
    assert response.status_code == 200
    assert await refusal(as_device(settings, login)) is None


async def test_a_device_registered_disabled_cannot_log_in(
    client: httpx.AsyncClient, settings: Settings, unique: str
) -> None:
    login = await commission(client, f"cred-{unique}-born-off", enabled=False)
    assert await refusal(as_device(settings, login)) is not None


@pytest.mark.parametrize("service", ["ingest", "api"])
async def test_the_ingest_and_api_identities_cannot_publish_telemetry(
    settings: Settings, unique: str, service: str
) -> None:
    endpoint = settings.mqtt_as(getattr(settings, service))
    topic = telemetry_topic(Kind.AIR, f"cred-{unique}-{service}")
    allowed = telemetry_topic(Kind.AIR, f"cred-{unique}-{service}-sim")
    simulator = settings.mqtt_as(settings.simulator)
    async with (
        watching(settings, unique) as watcher,
        device_client(endpoint, service) as forbidden,
        device_client(simulator, "sim") as publisher,
    ):
        forbidden.publish(topic, b"{}", qos=1)
        await wait_published(forbidden)
        # The refused message would have been routed before this one from the simulator.
        publisher.publish(allowed, b"{}", qos=1)
        await wait_published(publisher)
        await watcher.until(allowed)
    assert topic not in watcher.topics


async def test_devices_connect_over_tls_with_the_local_ca(
    client: httpx.AsyncClient, settings: Settings, broker: MosquittoBroker, unique: str
) -> None:
    assert broker.tls_port is not None
    assert broker.tls_dir is not None
    device_id = f"cred-{unique}-tls"
    login = await commission(client, device_id)
    secure = as_device(settings, login).model_copy(
        update={
            "host": "localhost",
            "port": broker.tls_port,
            "tls": True,
            "ca_file": str(broker.tls_dir / "ca.crt"),
        }
    )
    async with (
        watching(settings, unique) as watcher,
        device_client(secure, device_id) as tls_client,
    ):
        tls_client.publish(telemetry_topic(Kind.AIR, device_id), b"{}", qos=1)
        await wait_published(tls_client)
        await watcher.until(telemetry_topic(Kind.AIR, device_id))
    # The same login with the wrong password is refused over TLS too.
    assert await refusal(secure.model_copy(update={"password": "guess"})) is not None
