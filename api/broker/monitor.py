"""The city edge's backlog in the api's /metrics: the ingest queue, read every few seconds."""

from __future__ import annotations

import asyncio
from typing import Final

import structlog
from prometheus_client import Gauge

from api.broker.management import Management
from core.errors import Unavailable

log = structlog.get_logger(__name__)

INTERVAL_S: Final = 5.0
QUEUE_READY: Final = Gauge(
    "alatau_edge_queue_ready", "readings in the edge's ingest queue waiting for a replica"
)
QUEUE_UNACKED: Final = Gauge(
    "alatau_edge_queue_unacknowledged",
    "readings delivered to ingest replicas and not yet committed",
)
CONSUMER_UNACKED: Final = Gauge(
    "alatau_edge_consumer_unacknowledged",
    "deliveries each ingest replica holds, not yet committed",
    ["consumer"],
)
CONSUMERS: Final = Gauge("alatau_edge_queue_consumers", "ingest replicas consuming the queue")


async def watch(management: Management, queue: str) -> None:
    """Refresh the gauges until cancelled; an unreachable cluster leaves them as they were."""
    while True:
        try:
            state = await management.queue_state(queue)
        except Unavailable as exc:
            log.warning("edge queue unreadable", error=repr(exc))
        else:
            QUEUE_READY.set(state["ready"])
            QUEUE_UNACKED.set(state["unacknowledged"])
            CONSUMERS.set(len(state["consumers"]))
            CONSUMER_UNACKED.clear()
            for consumer in state["consumers"]:
                CONSUMER_UNACKED.labels(consumer["consumer"] or "?").set(consumer["unacknowledged"])
        await asyncio.sleep(INTERVAL_S)
