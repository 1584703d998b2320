"""The city edge's side of ingest: a competing consumer of the cluster's quorum queue.

Devices publish over MQTT to any RabbitMQ node; their telemetry and status land in one quorum
queue replicated on three nodes. Each ingest replica consumes it over AMQP with a bounded
prefetch; each delivery goes to the same service as an MQTT message does, and is acknowledged
once its batch has committed. Batches can commit out of order (two are written at once), so a
replica acknowledges with ``multiple`` up to the newest delivery below which every one has
committed. A replica that dies or loses its node gives every unacknowledged delivery back to
the queue at once, and the other replicas take it; a redelivered reading is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

import aiormq
import structlog
from aiormq.abc import DeliveredMessage
from yarl import URL

from core.config import Settings
from devices.contract import utc_now as now
from ingest import metrics
from ingest.parser import parse_delivery
from ingest.service import IngestService

log = structlog.get_logger(__name__)

# An ack token: the channel's generation above the delivery tag (tags are 64-bit).
_TAG_BITS: Final = 64
_TAG_MASK: Final = (1 << _TAG_BITS) - 1
# Ingest's own rejection echoes to devices travel on amq.topic too; they are not readings.
_ECHO_SUFFIX: Final = "/errors"
_TOPIC_EXCHANGE: Final = "amq.topic"


class Outstanding:
    """One channel's unacknowledged deliveries in arrival order, and how far they have all
    committed: the tag up to which a ``multiple`` acknowledgement is safe."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()

    def add(self, tag: int) -> None:
        self._order.append(tag)

    def complete(self, tags: list[int]) -> tuple[int | None, int]:
        """Mark ``tags`` committed; returns the tag to acknowledge up to (None if the oldest
        delivery is still pending) and how many deliveries that acknowledgement covers."""
        self._done.update(tags)
        upto, covered = None, 0
        while self._order and self._order[0] in self._done:
            upto = self._order.popleft()
            self._done.discard(upto)
            covered += 1
        return upto, covered

    def __len__(self) -> int:
        return len(self._order)


class AmqpConsumer:
    """Feeds the quorum queue's deliveries to the ingest service; the broker holds the rest."""

    def __init__(self, settings: Settings, service: IngestService) -> None:
        self._settings = settings
        self._edge = settings.edge
        self._service = service
        self._late_window = timedelta(seconds=settings.ingest.late_window_s)
        self._max_payload_bytes = settings.ingest.max_payload_bytes
        self._urls = [self._with_login(url) for url in self._edge.amqp_urls]
        self._generation = 0
        self._outstanding = Outstanding()
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._echo_channel: aiormq.abc.AbstractChannel | None = None
        self._ack_upto = 0
        self._acked_upto = 0
        self._ack_wanted = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.node: str | None = None
        service.set_acknowledge(self._acknowledge)
        service.echoes.set_publish(self._publish_echoes)

    def _with_login(self, url: str) -> URL:
        identity = self._settings.mqtt_as(self._settings.ingest)
        parsed = URL(url)
        if identity.username is not None:
            parsed = parsed.with_user(identity.username).with_password(identity.password)
        return parsed

    async def start(self) -> None:
        """Begin consuming in the background; ``connected`` is set once a node serves us."""
        self._runner = asyncio.create_task(self._run(), name="ingest-amqp")

    async def stop(self, *, end_session: bool = False) -> None:
        """Close the connection: whatever is still unacknowledged goes back to the queue."""
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run(self) -> None:
        for url in itertools.cycle(self._urls):
            try:
                await self._consume(url)
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning(
                    "edge node unavailable; trying the next",
                    node=f"{url.host}:{url.port}",
                    error=repr(exc),
                )
            finally:
                self._lost()
            await asyncio.sleep(self._edge.reconnect_delay_s)

    async def _consume(self, url: URL) -> None:
        connection = aiormq.Connection(
            url, client_properties={"connection_name": self._settings.ingest.client_id}
        )
        await connection.connect()
        try:
            channel = await connection.channel()
            await channel.basic_qos(prefetch_count=self._edge.prefetch)
            self._generation += 1
            self._outstanding = Outstanding()
            self._ack_upto = self._acked_upto = 0
            self._channel = channel
            # Echoes on a channel of their own: a refused publish closes only its channel,
            # never the one holding the deliveries.
            self._echo_channel = await connection.channel()
            await channel.basic_consume(
                self._edge.queue,
                self._on_delivery,
                consumer_tag=self._settings.ingest.client_id,
            )
            self.node = f"{url.host}:{url.port}"
            self.connected.set()
            log.info("consuming the edge queue", node=self.node, queue=self._edge.queue)
            writer = asyncio.create_task(self._write_acks(channel), name="ingest-amqp-acks")
            try:
                await asyncio.wait(
                    [connection.closing, channel.closing, writer],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            if writer.done() and not writer.cancelled() and writer.exception() is not None:
                raise writer.exception()  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    def _lost(self) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("lost the edge node; its unacknowledged deliveries go back to the queue")
        self.connected.clear()
        self._channel = None
        self._echo_channel = None
        self._outstanding = Outstanding()
        metrics.OUTSTANDING.set(0)

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        """Parse and queue one delivery; it is acknowledged when its batch commits."""
        tag = message.delivery_tag
        if tag is None:
            return
        token = (self._generation << _TAG_BITS) | tag
        self._outstanding.add(tag)
        topic = (message.routing_key or "").replace(".", "/")
        if topic.endswith(_ECHO_SUFFIX):
            self._acknowledge([token])
            return
        parsed = parse_delivery(
            topic,
            message.body,
            now(),
            max_payload_bytes=self._max_payload_bytes,
            late_window=self._late_window,
        )
        self._service.add(parsed, token)

    async def _publish_echoes(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """On amq.topic, where a device's MQTT subscription to its errors topic is bound; the
        ingest queue receives them too (bound to alatau.#) and ``_on_delivery`` skips them."""
        channel = self._echo_channel
        if channel is None or channel.is_closed:
            metrics.ECHOES_FAILED.inc(len(messages))
            return
        try:
            for topic, payload in messages:
                await channel.basic_publish(
                    payload, exchange=_TOPIC_EXCHANGE, routing_key=topic.replace("/", ".")
                )
        except (aiormq.exceptions.AMQPError, OSError) as exc:
            metrics.ECHOES_FAILED.inc(len(messages))
            log.warning("rejection echoes not sent", error=repr(exc))

    def _acknowledge(self, tokens: list[int]) -> None:
        """The service committed these deliveries: move the acknowledgement mark up."""
        generation = self._generation
        tags = [token & _TAG_MASK for token in tokens if token >> _TAG_BITS == generation]
        if len(tags) != len(tokens):
            # Their channel is gone: the broker has given them to a consumer again.
            metrics.ACKS_DROPPED.inc(len(tokens) - len(tags))
        if not tags or self._channel is None:
            return
        upto, covered = self._outstanding.complete(tags)
        metrics.OUTSTANDING.set(len(self._outstanding))
        if upto is not None:
            self._ack_upto = upto
            metrics.ACKS_SENT.inc(covered)
            self._ack_wanted.set()

    async def _write_acks(self, channel: aiormq.abc.AbstractChannel) -> None:
        """One writer, so acknowledgements leave in order and coalesce while one is in flight."""
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            upto = self._ack_upto
            if upto > self._acked_upto:
                await channel.basic_ack(upto, multiple=True)
                self._acked_upto = upto
