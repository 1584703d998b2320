"""The MQTT side of ingest: a persistent session, its subscription ordinary (one replica) or
shared (a group of replicas); each message goes to the service as it arrives, and is
acknowledged when the service has committed its batch.

Why one replica subscribes without ``$share``: Mosquitto 2.0 restores a persistent session's
ordinary subscriptions after a restart, so what devices publish before ingest reconnects is
queued for it; a shared subscription is not restored, and what is published in that gap
reaches nobody although the broker acknowledged it (README, Ingest guarantees).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

import gmqtt
import structlog

from core.config import Settings
from core.mqtt import connect, make_client
from devices.contract import ERRORS_LEAF, REFUSALS_TOPIC, TOPIC_ROOT
from devices.contract import utc_now as now
from ingest import metrics
from ingest.bulkack import BulkAckHandler
from ingest.parser import parse_delivery
from ingest.service import IngestService

log = structlog.get_logger(__name__)

# MQTT 5 caps Receive Maximum at 65,535 unacknowledged messages per session.
_RECEIVE_MAXIMUM_CAP: Final = 65_535


def _subscription(topic: str, share_group: str | None) -> str:
    return topic if share_group is None else f"$share/{share_group}/{topic}"


def telemetry_subscription(share_group: str | None) -> str:
    """Every device's telemetry alone (the benchmarks' subscribers)."""
    return _subscription(f"{TOPIC_ROOT}/+/+/telemetry", share_group)


def device_subscription(share_group: str | None) -> str:
    """Everything devices publish, telemetry and status and any other topic under the root
    (refused as ``invalid_topic``, not left to vanish at the broker); shared among the group's
    replicas when there is a group."""
    return _subscription(f"{TOPIC_ROOT}/#", share_group)


def refusals_subscription(share_group: str | None) -> str:
    """The publishes and subscriptions the broker refuses (stack/mosquitto_refusals.c)."""
    return _subscription(REFUSALS_TOPIC, share_group)


def subscriptions(share_group: str | None) -> list[str]:
    return [device_subscription(share_group), refusals_subscription(share_group)]


def earlier_subscriptions(share_group: str | None) -> list[str]:
    """What earlier versions subscribed to; a persistent session may still hold them, and
    overlapping with ``alatau/#`` they would deliver each reading twice."""
    return [
        _subscription(f"{TOPIC_ROOT}/+/+/telemetry", share_group),
        _subscription(f"{TOPIC_ROOT}/+/+/status", share_group),
    ]


_ECHO_SUFFIX: Final = f"/{ERRORS_LEAF}"


class MqttConsumer:
    """Feeds MQTT messages to the ingest service; the broker holds back whatever is unacked."""

    def __init__(self, settings: Settings, service: IngestService) -> None:
        self._settings = settings
        self._service = service
        ingest = settings.ingest
        self._late_window = timedelta(seconds=ingest.late_window_s)
        self._max_payload_bytes = ingest.max_payload_bytes
        self.client = make_client(
            settings.mqtt_as(settings.ingest),
            ingest.client_id,
            clean_session=False,
            # The bulk-ack handler acknowledges QoS 1 itself; this keeps gmqtt from acknowledging
            # on receipt should a message ever reach its own path.
            ack_after_handler=True,
            session_expiry_interval=ingest.session_expiry_s,
            receive_maximum=min(ingest.max_unacked, _RECEIVE_MAXIMUM_CAP),
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self._handler = BulkAckHandler.install(self.client, self._on_message)
        service.set_acknowledge(self._acknowledge)
        service.echoes.set_publish(self._publish_echoes)
        self.connected = asyncio.Event()
        self._last_message_at = time.monotonic()
        self._stopping = False

    async def start(self) -> None:
        await connect(self.client, self._settings.mqtt_as(self._settings.ingest))

    async def stop(self, *, end_session: bool = False) -> None:
        self._stopping = True
        if end_session:
            await self.client.disconnect(session_expiry_interval=0)
        else:
            await self.client.disconnect()

    async def leave_share_group(self, quiet_s: float) -> None:
        """Stop the broker routing new messages to us, then take what it still holds for this
        session: Mosquitto keeps queueing for a stopped replica until its session ends."""
        group = self._settings.ingest.share_group
        self.client.unsubscribe(subscriptions(group))
        self._last_message_at = time.monotonic()
        # Waiting for silence, which no event signals: sleep until quiet_s after the last message.
        while (remaining := quiet_s - (time.monotonic() - self._last_message_at)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
        log.info("left the share group", group=group)

    def _on_connect(self, client: gmqtt.Client, session_present: int, rc: int, props: Any) -> None:
        group = self._settings.ingest.share_group
        if not client.subscriptions:
            if session_present:
                client.unsubscribe(earlier_subscriptions(group))
            client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in subscriptions(group)])
        else:
            # Asked again on every reconnect, not only when the broker forgot our session:
            # Mosquitto 2.0 restores a persistent session after a restart but not its shared
            # subscriptions, so what is published after the restart would go to no one. A
            # repeated SUBSCRIBE replaces the same subscription and keeps what is queued.
            for subscription in client.subscriptions:
                client.resubscribe(subscription)
        log.info("connected to the broker", session_present=bool(session_present))
        self.connected.set()

    def _on_disconnect(self, client: gmqtt.Client, packet: Any, exc: Any = None) -> None:
        self.connected.clear()
        if self._stopping:
            log.info("disconnected from the broker")
        else:
            log.warning(
                "disconnected from the broker; reconnecting", error=repr(exc) if exc else None
            )

    def _on_message(self, topic: str, payload: bytes, ack: int | None) -> None:
        """Called synchronously by the MQTT read loop for every message: parse and queue."""
        self._last_message_at = time.monotonic()
        if topic.endswith(_ECHO_SUFFIX):
            # Ingest's own rejection echoes to devices (only ingest may publish there).
            if ack is not None:
                self._acknowledge([ack])
            return
        message = parse_delivery(
            topic,
            payload,
            now(),
            max_payload_bytes=self._max_payload_bytes,
            late_window=self._late_window,
        )
        self._service.add(message, ack)

    def _acknowledge(self, acks: list[int]) -> None:
        metrics.ACKS_SENT.inc(self._handler.acknowledge(acks))

    async def _publish_echoes(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """QoS 0: an echo is advice to the device, never worth holding a reading back for."""
        if not self.client.is_connected:
            metrics.ECHOES_FAILED.inc(len(messages))
            return
        for topic, payload in messages:
            self.client.publish(topic, payload, qos=0)
