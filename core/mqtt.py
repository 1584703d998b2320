"""gmqtt clients built the same way by every process: MQTT 5, credentials from the URL,
reconnecting forever with a bounded delay."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import gmqtt
import structlog
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50, MQTTv311

from core.config import MqttEndpoint

log = structlog.get_logger(__name__)

RECONNECT_DELAY_S = 2


def make_client(
    endpoint: MqttEndpoint,
    client_id: str,
    *,
    clean_session: bool = True,
    ack_after_handler: bool = False,
    will: gmqtt.Message | None = None,
    **connect_properties: Any,
) -> gmqtt.Client:
    """A client that reconnects by itself; ``ack_after_handler`` defers each PUBACK until the
    ``on_message`` coroutine returns, so a message is acknowledged only once it is handled."""
    client = gmqtt.Client(
        client_id,
        clean_session=clean_session,
        optimistic_acknowledgement=not ack_after_handler,
        will_message=will,
        **connect_properties,
    )
    if endpoint.username is not None:
        client.set_auth_credentials(endpoint.username, endpoint.password)
    client.set_config(
        {"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": RECONNECT_DELAY_S}
    )
    return client


async def connect(client: gmqtt.Client, endpoint: MqttEndpoint, keepalive: int = 30) -> None:
    tls: ssl.SSLContext | bool = False
    if endpoint.tls:
        tls = ssl.create_default_context(cafile=endpoint.ca_file)
    version = MQTTv50 if endpoint.protocol == "5" else MQTTv311
    await client.connect(
        endpoint.host, endpoint.port, ssl=tls, keepalive=keepalive, version=version
    )


async def connect_when_possible(client: gmqtt.Client, endpoint: MqttEndpoint, what: str) -> None:
    """Retry a first connection that failed until the broker answers (gmqtt reconnects by
    itself only once it has connected); ``what`` names the client in the logs."""
    while True:
        await asyncio.sleep(RECONNECT_DELAY_S)
        try:
            await connect(client, endpoint)
        except OSError as exc:
            log.warning("still cannot reach the broker", client=what, error=repr(exc))
        else:
            return


def refused_for_good(client: gmqtt.Client) -> bool:
    """Whether gmqtt stopped reconnecting because the broker refused the login (CONNACK "bad
    username or password", "not authorized", ...): it then waits for an explicit connect."""
    # gmqtt keeps this flag on its package handler and offers no public view of it.
    return bool(client._package_handler._permanent_failure)


async def wait_published(client: gmqtt.Client) -> None:
    """Wait until the broker has acknowledged every QoS 1 message this client published."""
    # gmqtt keeps unacknowledged outgoing messages in its storage and offers no public wait.
    await client._persistent_storage.wait_empty()


async def publish_when_possible(
    client: gmqtt.Client, topic: str, payload: bytes | str, *, retain: bool = False
) -> None:
    """Publish at QoS 1, waiting while the client is offline or its in-flight window is full.

    gmqtt raises OverflowError once every packet id the broker's Receive Maximum allows is in
    flight; a publisher that outruns the broker must wait for acknowledgements, not drop.
    """
    while True:
        if not client.is_connected:
            await asyncio.sleep(0.05)
            continue
        try:
            client.publish(topic, payload, qos=1, retain=retain)
        except OverflowError:
            await asyncio.sleep(0.001)
        else:
            return
