"""A bare subscriber: receives and acknowledges at QoS 1 and does nothing else. Its drain rate of
a backlog is the ceiling ingest is measured against, for gmqtt (ours) and paho-mqtt; on the city
edge (``--lib amqp``) a bare AMQP consumer of the quorum queue, acknowledging as ingest does.

``python -m bench.subscriber --lib gmqtt --client-id X --share-group G --count N`` prints JSON.
With ``--prepare`` it only creates the persistent session and subscription, so a backlog can
queue up for it while it is away.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from typing import Any

import uvloop

from core.config import parse_mqtt_url
from core.mqtt import connect, make_client
from ingest.consumer import telemetry_subscription

SESSION_EXPIRY_S = 3600
# With several subscribers sharing a backlog none knows its share: each stops when idle this long.
IDLE_S = 1.0


async def gmqtt_drain(
    url: str, client_id: str, group: str, count: int, prepare: bool
) -> dict[str, Any]:
    import gmqtt

    endpoint = parse_mqtt_url(url)
    received = 0
    first = last = 0.0
    done = asyncio.Event()

    async def on_message(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        nonlocal received, first, last
        received += 1
        last = time.time()
        if received == 1:
            first = last
        if received >= count:
            done.set()
        return 0

    client = make_client(
        endpoint,
        client_id,
        clean_session=False,
        ack_after_handler=True,
        session_expiry_interval=SESSION_EXPIRY_S,
        receive_maximum=20_000,
    )
    client.on_message = on_message
    subscribed = asyncio.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    await connect(client, endpoint)
    client.subscribe(gmqtt.Subscription(telemetry_subscription(group), qos=1))
    await subscribed.wait()
    while not prepare and not done.is_set():
        await asyncio.sleep(0.1)
        if received and time.time() - last > IDLE_S:
            break
    await client.disconnect()
    return {"received": received, "first": first, "last": last}


async def gmqtt_bulk_drain(
    url: str, client_id: str, group: str, count: int, prepare: bool
) -> dict[str, Any]:
    """gmqtt on ingest's receive path (ingest.bulkack): no Task per message, and the PUBACKs of
    each read from the socket in one write. The ceiling of ingest's MQTT side."""
    import gmqtt

    from ingest.bulkack import BulkAckHandler

    endpoint = parse_mqtt_url(url)
    received = 0
    first = last = 0.0
    done = asyncio.Event()
    pending: list[int] = []
    loop = asyncio.get_running_loop()

    def flush() -> None:
        handler.acknowledge(pending[:])
        pending.clear()

    def sink(topic: str, payload: bytes, ack: int | None) -> None:
        nonlocal received, first, last
        received += 1
        last = time.time()
        if received == 1:
            first = last
        if received >= count:
            done.set()
        if ack is not None:
            if not pending:
                loop.call_soon(flush)
            pending.append(ack)

    client = make_client(
        endpoint,
        client_id,
        clean_session=False,
        ack_after_handler=True,
        session_expiry_interval=SESSION_EXPIRY_S,
        receive_maximum=20_000,
    )
    handler = BulkAckHandler.install(client, sink)
    subscribed = asyncio.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    await connect(client, endpoint)
    client.subscribe(gmqtt.Subscription(telemetry_subscription(group), qos=1))
    await subscribed.wait()
    while not prepare and not done.is_set():
        await asyncio.sleep(0.1)
        if received and time.time() - last > IDLE_S:
            break
    await client.disconnect()
    return {"received": received, "first": first, "last": last}


def paho_drain(url: str, client_id: str, group: str, count: int, prepare: bool) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    endpoint = parse_mqtt_url(url)
    received = 0
    first = last = 0.0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal received, first, last
        received += 1
        last = time.time()
        if received == 1:
            first = last
        if received >= count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20_000)
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    properties.ReceiveMaximum = 20_000
    client.connect(endpoint.host, endpoint.port, clean_start=False, properties=properties)
    client.subscribe(telemetry_subscription(group), qos=1)
    client.loop_start()
    subscribed.wait(30)
    while not prepare and not done.is_set():
        done.wait(0.1)
        if received and time.time() - last > IDLE_S:
            break
    client.disconnect()
    client.loop_stop()
    return {"received": received, "first": first, "last": last}


# Ingest's own bounds on the city edge: EdgeSettings.prefetch, and an acknowledgement with
# ``multiple`` per committed batch.
AMQP_PREFETCH = 10_000
AMQP_ACK_EVERY = 1_000


async def amqp_drain(url: str, queue: str, count: int) -> dict[str, Any]:
    """Consume ``count`` deliveries of ``queue`` with ingest's prefetch, acknowledging them with
    ``multiple`` every thousand, as ingest does after each batch."""
    import aiormq
    from aiormq.abc import DeliveredMessage

    received = 0
    first = last = 0.0
    done = asyncio.Event()
    connection = aiormq.Connection(url)
    await connection.connect()
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=AMQP_PREFETCH)

    async def on_message(message: DeliveredMessage) -> None:
        nonlocal received, first, last
        received += 1
        last = time.time()
        if received == 1:
            first = last
        if message.delivery_tag is not None and (
            received % AMQP_ACK_EVERY == 0 or received >= count
        ):
            await channel.basic_ack(message.delivery_tag, multiple=True)
        if received >= count:
            done.set()

    await channel.basic_consume(queue, on_message)
    while not done.is_set():
        await asyncio.sleep(0.1)
        if received and time.time() - last > IDLE_S:
            break
    await connection.close()
    return {"received": received, "first": first, "last": last}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", choices=["gmqtt", "gmqtt-bulk", "paho", "amqp"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", default="bench-bare")
    parser.add_argument("--share-group", default="bare")
    parser.add_argument("--queue", default="alatau.ingest", help="the queue --lib amqp consumes")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--prepare", action="store_true")
    args = parser.parse_args()
    if args.lib == "amqp":
        result = uvloop.run(amqp_drain(args.url, args.queue, args.count))
    elif args.lib == "gmqtt":
        result = uvloop.run(
            gmqtt_drain(args.url, args.client_id, args.share_group, args.count, args.prepare)
        )
    elif args.lib == "gmqtt-bulk":
        result = uvloop.run(
            gmqtt_bulk_drain(args.url, args.client_id, args.share_group, args.count, args.prepare)
        )
    else:
        result = paho_drain(args.url, args.client_id, args.share_group, args.count, args.prepare)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
