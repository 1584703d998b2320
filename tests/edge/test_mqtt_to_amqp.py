"""A device's MQTT publish reaches ingest's AMQP consumer; each service can do only its job."""

from __future__ import annotations

import uuid

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_topology import INGEST_QUEUE
from tests.edge.device import Device, DeviceFactory, drain_until


async def test_a_qos1_publish_lands_in_the_quorum_queue_for_ingest(
    edge: RabbitCluster, device_factory: DeviceFactory
) -> None:
    device = device_factory()
    assert not device.connect(edge.mqtt_port(1)).is_failure
    payload = f'{{"ts": 1, "vehicle_count": 3, "n": "{uuid.uuid4()}"}}'.encode()
    mid = device.publish(f"alatau/traffic/{device.username}/telemetry", payload)
    assert device.wait_acked([mid])

    # Consumed through another node than the one the device published to.
    received = await drain_until(
        edge.amqp_url("ingest", 2),
        INGEST_QUEUE,
        lambda kept: len(kept) >= 1,
        keep=lambda m: m.routing_key == f"alatau.traffic.{device.username}.telemetry",
    )
    assert [m.body for m in received] == [payload]
    message = received[0]
    assert message.exchange == "amq.topic"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers == {"x-mqtt-publish-qos": 1, "x-mqtt-dup": False}


async def test_status_and_every_other_topic_under_the_root_reach_the_queue(
    edge: RabbitCluster, device_factory: DeviceFactory
) -> None:
    device = device_factory()
    assert not device.connect(edge.mqtt_port(3)).is_failure
    # A topic no part of the contract defines reaches ingest, which refuses it as
    # invalid_topic (a publish that no queue took would be acknowledged and vanish).
    unrouted = device.publish(f"alatau/energy/{device.username}/debug", b"not a reading")
    status = device.publish(f"alatau/energy/{device.username}/status", b"online", retain=True)
    assert device.wait_acked([unrouted, status])
    received = await drain_until(
        edge.amqp_url("ingest", 1),
        INGEST_QUEUE,
        lambda kept: any((m.routing_key or "").endswith(".status") for m in kept),
        keep=lambda m: (m.routing_key or "").split(".")[2] == device.username,
    )
    assert [(m.routing_key, m.body) for m in received] == [
        (f"alatau.energy.{device.username}.debug", b"not a reading"),
        (f"alatau.energy.{device.username}.status", b"online"),
    ]


async def test_ingest_may_consume_and_echo_errors_but_not_publish_readings_or_declare(
    edge: RabbitCluster,
) -> None:
    connection = await aio_pika.connect(edge.amqp_url("ingest", 1))
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue(f"alatau.live.{uuid.uuid4().hex[:6]}", auto_delete=True)
        channel = await connection.channel(publisher_confirms=True)
        topic = await channel.get_exchange("amq.topic", ensure=False)
        await topic.publish(aio_pika.Message(b"{}"), routing_key="alatau.air.x.errors")
        with pytest.raises(ChannelAccessRefused):
            await topic.publish(aio_pika.Message(b"x"), routing_key="alatau.air.x.telemetry")
    finally:
        await connection.close()


async def test_the_api_binds_its_own_live_queue_to_alatau_topics_only(
    edge: RabbitCluster, device_factory: DeviceFactory
) -> None:
    connection = await aio_pika.connect(edge.amqp_url("api", 2))
    try:
        channel = await connection.channel()
        live = await channel.declare_queue(
            f"alatau.live.{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
        )
        await live.bind("amq.topic", routing_key="alatau.#")
        with pytest.raises(ChannelAccessRefused):
            await (await connection.channel()).declare_queue("not-the-apis", exclusive=True)
        device = device_factory()
        assert not device.connect(edge.mqtt_port(1)).is_failure
        mid = device.publish(f"alatau/air/{device.username}/telemetry", b"live")
        assert device.wait_acked([mid])
        message = await live.get(timeout=10, fail=False)
        while message is not None and device.username not in (message.routing_key or ""):
            message = await live.get(timeout=10, fail=False)
        assert message is not None
        assert message.body == b"live"
        # It may look at the ingest queue (a passive declare needs no permission), not read it.
        ingest_queue = await (await connection.channel()).get_queue(INGEST_QUEUE)
        with pytest.raises(ChannelAccessRefused):
            await ingest_queue.consume(_ignore)
    finally:
        await connection.close()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


def test_the_simulator_publishes_on_alatau_only(edge: RabbitCluster) -> None:
    password = edge.passwords()["simulator"]
    simulator = Device("service.simulator", password, f"simulator-{uuid.uuid4().hex[:6]}")
    try:
        assert not simulator.connect(edge.mqtt_port(2)).is_failure
        mid = simulator.publish("alatau/traffic/sim-1/telemetry", b"{}")
        assert simulator.wait_acked([mid])
        drops = len(simulator.disconnects)
        simulator.publish("elsewhere/x", b"{}")
        # A refused topic closes the connection; the publish is never acknowledged.
        assert simulator.wait_for(lambda: len(simulator.disconnects) > drops)
    finally:
        simulator.close()
