"""The api's /health and /metrics on the city edge: the ingest queue's backlog and what each
ingest replica holds unacknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import SecretStr

from core.config import Settings
from tests.edge.conftest import EdgeApi
from tests.processes import IngestProcess
from tests.support import eventually


async def test_health_and_metrics_show_the_queue_and_each_replica(
    edge_api: EdgeApi, settings: Settings
) -> None:
    edge = edge_api.edge
    ingest = settings.ingest.model_copy(
        update={
            "mqtt_username": "service.ingest",
            "mqtt_password": SecretStr(edge.passwords()["ingest"]),
        }
    )
    replica = IngestProcess(
        settings.model_copy(update={"ingest": ingest}),
        "edge-health-replica",
        ALATAU_EDGE__BROKER="rabbitmq",
        ALATAU_EDGE__AMQP_URL=f"amqp://127.0.0.1:{edge.amqp_port(2)}/",
    )
    replica.start()
    try:
        async with httpx.AsyncClient(base_url=edge_api.url) as client:

            async def health() -> dict[str, Any]:
                body: dict[str, Any] = (await client.get("/api/v1/health")).json()
                return body

            def consuming(body: dict[str, Any]) -> bool:
                queue = body.get("edge_queue") or {}
                return "edge-health-replica" in [c["consumer"] for c in queue.get("consumers", [])]

            body = await eventually(health, consuming, timeout_s=30)
            assert body["edge"] == "rabbitmq"
            assert consuming(body), body
            queue = body["edge_queue"]
            assert queue["members_online"] == len(edge.nodes)
            assert queue["ready"] >= 0
            metrics = await eventually(
                lambda: client.get("/metrics", headers=edge_api.headers),
                lambda r: (
                    'alatau_edge_consumer_unacknowledged{consumer="edge-health-replica"}' in r.text
                ),
                timeout_s=30,
            )
            assert "alatau_edge_queue_ready " in metrics.text
    finally:
        await asyncio.to_thread(replica.stop)
