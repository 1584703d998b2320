"""Ingest's resources, opened in order and closed in reverse: pool, service, MQTT consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from core.config import Settings
from core.db import create_pool, until_available
from ingest import repository
from ingest.amqp import AmqpConsumer
from ingest.consumer import MqttConsumer
from ingest.service import IngestService

log = structlog.get_logger(__name__)

POOL_CLOSE_TIMEOUT_S = 10.0


@dataclass
class RunningIngest:
    service: IngestService
    consumer: MqttConsumer | AmqpConsumer


def _consumer(settings: Settings, service: IngestService) -> MqttConsumer | AmqpConsumer:
    """The source the configuration names: one pipeline behind either edge."""
    if settings.edge.broker == "rabbitmq":
        return AmqpConsumer(settings, service)
    return MqttConsumer(settings, service)


@asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[RunningIngest]:
    """Run one ingest replica for the duration of the block.

    On exit the consumer stays connected while the last batch is written, so those messages are
    acknowledged; anything that arrives later stays with the broker for the next session.
    """
    # Started before the database is up (a restart of everything), it waits for it.
    pool = await until_available(
        lambda: create_pool(settings, "ingest", init=repository.prepare_connection),
        initial_s=settings.ingest.retry_initial_s,
        max_s=settings.ingest.retry_max_s,
        step="connect",
    )
    assert pool is not None  # no stop event: it returns only with a pool
    try:
        service = IngestService(pool, settings.ingest)
        flusher = asyncio.create_task(service.run(), name="ingest-flusher")
        retention = asyncio.create_task(service.run_retention(), name="ingest-retention")
        consumer = _consumer(settings, service)
        try:
            await consumer.start()
            log.info(
                "ingest running", client_id=settings.ingest.client_id, edge=settings.edge.broker
            )
            yield RunningIngest(service, consumer)
        finally:
            retention.cancel()
            retiring = settings.ingest.retire_on_stop and consumer.connected.is_set()
            if retiring and isinstance(consumer, MqttConsumer):
                await consumer.leave_share_group(settings.ingest.retire_quiet_s)
            service.close()
            try:
                await asyncio.wait_for(asyncio.shield(flusher), timeout=30)
            except TimeoutError:
                flusher.cancel()
            await consumer.stop(end_session=retiring)
            log.info("ingest stopped", **vars(service.totals))
    finally:
        try:
            await asyncio.wait_for(pool.close(), timeout=POOL_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("database pool did not drain; terminating its connections")
            pool.terminate()
