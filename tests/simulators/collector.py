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
from tests.support import eventually


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
        self._subscribed = asyncio.Event()
        self.client = make_client(
            settings.mqtt_as(settings.api), f"test-collector-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        if topic.split("/")[2].startswith(self.prefix):
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

    async def wait_for_readings(self, total: int, timeout_s: float = 20.0) -> int:
        async def count() -> int:
            return sum(len(readings) for readings in self.telemetry().values())

        return await eventually(count, lambda n: n >= total, timeout_s=timeout_s)


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
