"""An MQTT 3.1.1 device (paho) that records what the broker acknowledged and when it was
dropped, and a consumer that drains the ingest queue over AMQP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aio_pika
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

T = TypeVar("T")


@dataclass
class Device:
    """A paho client on its own network thread; QoS 1 publishes are tracked by message id."""

    username: str
    password: str
    client_id: str
    clean_session: bool = True
    acked: set[int] = field(default_factory=set)
    ack_times: dict[int, float] = field(default_factory=dict)
    connack: ReasonCode | None = None
    disconnects: list[float] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    subscribed: dict[int, list[int]] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
            protocol=paho.MQTTv311,
        )
        self.client.username_pw_set(self.username, self.password)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        with self.changed:
            self.connack = rc
            if not rc.is_failure:
                self.connects.append(time.monotonic())
            self.changed.notify_all()

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, rc: ReasonCode, props: object
    ) -> None:
        with self.changed:
            self.disconnects.append(time.monotonic())
            self.changed.notify_all()

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, rc: ReasonCode, props: object
    ) -> None:
        with self.changed:
            self.acked.add(mid)
            self.ack_times[mid] = time.monotonic()
            self.changed.notify_all()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        codes: list[ReasonCode],
        props: object,
    ) -> None:
        with self.changed:
            self.subscribed[mid] = [code.value for code in codes]
            self.changed.notify_all()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self.changed:
            self.messages.append((message.topic, bytes(message.payload)))
            self.changed.notify_all()

    def subscribe(self, topic: str) -> int:
        mid = self.client.subscribe(topic, qos=1)[1]
        if mid is None:
            raise ConnectionError(f"{self.username} is not connected")
        return mid

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 20) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout_s)

    def connect(self, port: int, timeout_s: float = 20) -> ReasonCode:
        """Connect (blocking until CONNACK or a drop); the CONNACK's reason code."""
        self.connack = None
        seen = len(self.disconnects)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.wait_for(lambda: self.connack is not None or len(self.disconnects) > seen, timeout_s)
        if self.connack is None:
            raise ConnectionError(f"{self.username} got no CONNACK from port {port}")
        return self.connack

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return info.mid

    def wait_acked(self, mids: Iterable[int], timeout_s: float = 20) -> bool:
        wanted = set(mids)
        return self.wait_for(lambda: wanted <= self.acked, timeout_s)

    def stop(self) -> None:
        """Stop the network thread without a DISCONNECT (a refused login, a broker drop)."""
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Stream:
    """A device publishing QoS 1 readings as fast as the broker acknowledges them, in a thread,
    moving to the next node the moment its connection drops (as firmware with a host list)."""

    device: Device
    ports: list[int]
    # The topic and payload of reading number n; by default a marker the tests can read back.
    message: Callable[[str, int], tuple[str, bytes]] = field(
        default=lambda name, n: (f"alatau/energy/{name}/telemetry", f"{name}:{n}".encode())
    )
    sent: dict[int, int] = field(default_factory=dict)  # paho message id -> sequence number
    failovers: list[tuple[float, float]] = field(default_factory=list)  # (dropped, connected)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        node = 0
        seq = 0
        while not self.stopping.is_set():
            if len(self.device.disconnects) > len(self.failovers):
                dropped = self.device.disconnects[-1]
                self.device.client.loop_stop()
                node = (node + 1) % len(self.ports)
                while not self._connected(self.ports[node]):
                    node = (node + 1) % len(self.ports)
                self.failovers.append((dropped, time.monotonic()))
            topic, payload = self.message(self.device.username, seq)
            self.sent[self.device.publish(topic, payload)] = seq
            seq += 1
            # Keep at most 200 readings unacknowledged, like a device's bounded buffer.
            self.device.wait_for(lambda: len(self.sent) - len(self.device.acked) < 200, 5)

    def _connected(self, port: int) -> bool:
        try:
            return not self.device.connect(port).is_failure
        except OSError:
            return False

    def sent_sequences(self) -> set[int]:
        with self.device.changed:
            return set(self.sent.values())

    def acked_sequences(self) -> set[int]:
        with self.device.changed:
            return {self.sent[mid] for mid in self.device.acked if mid in self.sent}


class DeviceFactory(Protocol):
    def __call__(
        self,
        name: str | None = None,
        *,
        clean_session: bool = True,
        password: str | None = None,
        client_id: str | None = None,
    ) -> Device: ...


async def drain_until(
    amqp_url: str,
    queue: str,
    done: Callable[[list[aio_pika.abc.AbstractIncomingMessage]], bool],
    *,
    keep: Callable[[aio_pika.abc.AbstractIncomingMessage], bool] = lambda m: True,
    timeout_s: float = 30,
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Consume ``queue`` (acknowledging everything) until ``done`` holds of the kept messages,
    or the time is up; the kept messages either way, for the test's own assertion."""
    kept: list[aio_pika.abc.AbstractIncomingMessage] = []
    arrived = asyncio.Event()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        source = await channel.get_queue(queue, ensure=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if keep(message):
                kept.append(message)
                arrived.set()
            await message.ack()

        tag = await source.consume(on_message)
        deadline = time.monotonic() + timeout_s
        while not done(kept) and time.monotonic() < deadline:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
        await source.cancel(tag)
    finally:
        await connection.close()
    return kept


def poll(probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 20) -> T:
    """Call ``probe`` until ``done`` holds of its result (the management API's statistics lag
    by up to a second); the last result either way, for the test's own assertion."""
    deadline = time.monotonic() + timeout_s
    result = probe()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.05)
        result = probe()
    return result
