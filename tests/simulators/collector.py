"""A subscriber that keeps every message on some topics, for comparing with what was published."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import gmqtt
import orjson

from core.config import Settings
from core.mqtt import connect, make_client
from tests.support import eventually, publish


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """Subscribes (QoS 1) before the test publishes and keeps the messages of one device prefix."""

    def __init__(self, settings: Settings, prefix: str, topics: tuple[str, ...]) -> None:
        self.settings = settings
        self.prefix = prefix
        self.topics = topics
        self.messages: list[Received] = []
        self._marker_prefix = f"{prefix}-marker-"
        self._markers: set[str] = set()
        self._subscribed = asyncio.Event()
        self.client = make_client(
            settings.mqtt_as(settings.api), f"test-collector-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        device_id = topic.split("/")[2]
        if device_id.startswith(self._marker_prefix):
            self._markers.add(device_id)
        elif device_id.startswith(self.prefix):
            self.messages.append(Received(topic, payload, bool(properties.get("retain"))))
        return 0

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        self._subscribed.set()

    async def __aenter__(self) -> Collector:
        await connect(self.client, self.settings.mqtt_as(self.settings.api))
        self.client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in self.topics])
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def settle(self) -> None:
        """Publish a marker on a subscribed topic and wait for it: what the broker took before
        it (for one subscriber, the broker keeps the order in which it routed) has then been
        delivered, so a count taken afterwards would see anything extra. On a status topic the
        marker is an ``online`` of a device nobody registered, which ingest takes without a row,
        a rejection or a count; on a telemetry topic ingest keeps it as a rejection."""
        marker = f"{self._marker_prefix}{uuid.uuid4().hex[:8]}"
        chosen = next((t for t in self.topics if t.endswith("/status")), self.topics[0])
        names = iter(("air", marker))
        topic = "/".join(
            next(names, level) if level == "+" else level for level in chosen.split("/")
        )
        payload = b"online" if topic.endswith("/status") else b"{}"
        await publish(self.settings, [(topic, payload)])

        async def arrived() -> bool:
            return marker in self._markers

        assert await eventually(arrived, bool, timeout_s=10), f"the marker on {topic} never came"

    def telemetry(self) -> dict[str, list[dict[str, Any]]]:
        """Every reading received, per device id, in arrival order."""
        readings: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for message in self.messages:
            if not message.topic.endswith("/telemetry"):
                continue
            body = orjson.loads(message.payload)
            readings[message.topic.split("/")[2]].extend(body if isinstance(body, list) else [body])
        return dict(readings)

    def telemetry_messages(self) -> list[Received]:
        return [message for message in self.messages if message.topic.endswith("/telemetry")]

    def statuses(self) -> dict[str, list[str]]:
        """Every status received, per device id, in arrival order."""
        statuses: dict[str, list[str]] = defaultdict(list)
        for message in self.messages:
            if message.topic.endswith("/status"):
                statuses[message.topic.split("/")[2]].append(message.payload.decode())
        return dict(statuses)

    def reading_count(self) -> int:
        return sum(len(readings) for readings in self.telemetry().values())

    async def wait_for_readings(self, total: int, timeout_s: float = 20.0) -> int:
        async def count() -> int:
            return self.reading_count()

        return await eventually(count, lambda n: n >= total, timeout_s=timeout_s)

    async def wait_for_devices(self, devices: set[str], timeout_s: float = 30.0) -> None:
        """Wait until every one of ``devices`` has published at least one reading."""

        async def publishing() -> set[str]:
            return set(self.telemetry())

        seen = await eventually(publishing, lambda seen: devices <= seen, timeout_s=timeout_s)
        assert devices <= seen, f"never published: {sorted(devices - seen)}"


async def retained_statuses(settings: Settings, prefix: str, devices: int) -> dict[str, str]:
    """The retained status of the ``devices`` devices of ``prefix``, as a new subscriber sees it."""
    async with Collector(settings, prefix, ("alatau/+/+/status",)) as collector:

        async def retained() -> dict[str, str]:
            return {
                message.topic.split("/")[2]: message.payload.decode()
                for message in collector.messages
                if message.retain
            }

        return await eventually(retained, lambda found: len(found) >= devices, timeout_s=10)
