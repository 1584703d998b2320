"""Where a replica's live feed takes its readings from: the same broker the devices reach.

On Mosquitto, a clean MQTT session of the replica's own subscribed to every telemetry topic at
QoS 0. On the city edge, an AMQP queue of the replica's own (exclusive, deleted with its
connection, bounded: the oldest reading goes first when a slow replica falls behind), bound to
``amq.topic`` with what its clients filter on: all telemetry, one kind's, or named devices'.
Either way a live view never holds the broker or ingest back. After anything that may have
missed readings (a reconnect, a binding added) the source calls ``on_gap`` so the replica
refills its snapshot from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Collection
from typing import Any, Final, Protocol

import aiormq
import gmqtt
import structlog
from aiormq.abc import DeliveredMessage
from yarl import URL

from api.live.schemas import LiveFilter
from core.config import Settings
from core.mqtt import connect, connect_when_possible, make_client
from core.tasks import TaskSet
from devices.contract import TOPIC_ROOT

log = structlog.get_logger(__name__)

OnMessage = Callable[[str, bytes], None]
OnGap = Callable[[], None]
SUBSCRIBE_TIMEOUT_S: Final = 10.0
TOPIC_EXCHANGE: Final = "amq.topic"
# Readings a replica's own queue holds before dropping the oldest.
QUEUE_MAX_LENGTH: Final = 10_000
ALL_TELEMETRY: Final = f"{TOPIC_ROOT}.*.*.telemetry"


class LiveSource(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def want(self, filters: Collection[LiveFilter]) -> None:
        """What the replica's clients filter on now (a source may narrow what it takes)."""


def routing_keys(filters: Collection[LiveFilter]) -> set[str]:
    """The bindings that carry every reading ``filters`` may want (a district is not in a
    topic, so a district-only filter needs all telemetry)."""
    keys: set[str] = set()
    for live_filter in filters:
        kinds = sorted(k.value for k in live_filter.kinds) or ["*"]
        if live_filter.devices:
            keys |= {f"{TOPIC_ROOT}.{k}.{d}.telemetry" for k in kinds for d in live_filter.devices}
        elif live_filter.kinds:
            keys |= {f"{TOPIC_ROOT}.{k}.*.telemetry" for k in kinds}
        else:
            return {ALL_TELEMETRY}
    return keys


class MqttSource:
    """Every telemetry topic of a Mosquitto broker, on a clean session of this replica."""

    def __init__(
        self, settings: Settings, client_id: str, on_message: OnMessage, on_gap: OnGap
    ) -> None:
        self._endpoint = settings.mqtt_as(settings.api)
        self._on_message = on_message
        self._on_gap = on_gap
        self._subscribed = asyncio.Event()
        self._tasks = TaskSet()
        self.client = make_client(self._endpoint, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._deliver

    async def start(self) -> None:
        try:
            await connect(self.client, self._endpoint)
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            # The REST API must not depend on the broker: serve, and keep trying to subscribe.
            log.warning("live feed cannot reach the broker yet", error=repr(exc))
            self._tasks.spawn(
                connect_when_possible(self.client, self._endpoint, "live feed"), "live-connect"
            )
            return
        log.info("live feed subscribed")

    async def stop(self) -> None:
        await self._tasks.cancel()
        if self.client.is_connected:
            await self.client.disconnect()

    def want(self, filters: Collection[LiveFilter]) -> None:
        return None

    def _on_connect(self, client: gmqtt.Client, flags: int, rc: int, props: Any) -> None:
        if not client.subscriptions:
            client.subscribe(gmqtt.Subscription(f"{TOPIC_ROOT}/+/+/telemetry", qos=0))
        else:
            # A clean session starts empty: subscribe again, and refill what we missed.
            for subscription in client.subscriptions:
                client.resubscribe(subscription)
            self._on_gap()

    def _on_subscribe(self, client: gmqtt.Client, mid: int, qos: Any, props: Any) -> None:
        self._subscribed.set()

    def _deliver(
        self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        self._on_message(topic, payload)
        return 0


class AmqpSource:
    """A queue of this replica's own on the city edge, bound to what its clients want."""

    def __init__(
        self, settings: Settings, queue: str, on_message: OnMessage, on_gap: OnGap
    ) -> None:
        identity = settings.mqtt_as(settings.api)
        self._urls = [
            URL(url).with_user(identity.username or "").with_password(identity.password)
            for url in settings.edge.amqp_urls
        ]
        self._reconnect_delay_s = settings.edge.reconnect_delay_s
        self._queue = queue
        self._on_message = on_message
        self._on_gap = on_gap
        self._wanted: set[str] = set()
        self._bound: set[str] = set()
        self._changed = asyncio.Event()
        self._tasks = TaskSet()
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._tasks.spawn(self._run(), "live-amqp")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def want(self, filters: Collection[LiveFilter]) -> None:
        wanted = routing_keys(filters)
        if wanted != self._wanted:
            self._wanted = wanted
            self._changed.set()

    async def _run(self) -> None:
        for url in itertools.cycle(self._urls):
            try:
                await self._consume(url)
            except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
                log.warning(
                    "live feed lost its edge node", node=f"{url.host}:{url.port}", error=repr(exc)
                )
            self.ready.clear()
            self._bound = set()
            await asyncio.sleep(self._reconnect_delay_s)

    async def _consume(self, url: URL) -> None:
        connection = aiormq.Connection(url, client_properties={"connection_name": self._queue})
        await connection.connect()
        try:
            channel = await connection.channel()
            await channel.queue_declare(
                self._queue,
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": QUEUE_MAX_LENGTH, "x-overflow": "drop-head"},
            )
            await channel.basic_consume(self._queue, self._deliver, no_ack=True)
            self._changed.set()
            self.ready.set()
            log.info("live feed consuming", node=f"{url.host}:{url.port}", queue=self._queue)
            binder = asyncio.create_task(self._bind(channel))
            try:
                await asyncio.wait(
                    [connection.closing, channel.closing, binder],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                binder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await binder
            if binder.done() and not binder.cancelled() and binder.exception() is not None:
                raise binder.exception()  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _bind(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Keep the queue's bindings equal to what the clients want; refill the snapshot after
        each binding added, since what it carries was not flowing before."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            wanted = set(self._wanted)
            for key in sorted(wanted - self._bound):
                await channel.queue_bind(self._queue, TOPIC_EXCHANGE, routing_key=key)
            for key in sorted(self._bound - wanted):
                await channel.queue_unbind(self._queue, TOPIC_EXCHANGE, routing_key=key)
            added = wanted - self._bound
            self._bound = wanted
            if added:
                self._on_gap()

    async def _deliver(self, message: DeliveredMessage) -> None:
        self._on_message((message.routing_key or "").replace(".", "/"), message.body)
