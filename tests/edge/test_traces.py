"""Nothing refused without a trace, on the city edge: a topic no part of the contract defines
reaches ingest through the quorum queue (bound to ``alatau.#``) and is refused as
``invalid_topic``; each rejection is echoed to its device on its errors topic, which another
device may not read (that refusal is kept too, by the api that answers the topic check)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from core.config import EdgeSettings, Settings
from ingest.app import RunningIngest, running_ingest
from stack.rabbitmq import RabbitCluster
from tests.edge.conftest import EdgeApi
from tests.edge.test_logins import commission, connect, device
from tests.support import eventually

SUBSCRIPTION_REFUSED = 0x80


@pytest.fixture
async def edge_ingest(
    healthy_edge: RabbitCluster, edge_api: EdgeApi, settings: Settings
) -> AsyncIterator[RunningIngest]:
    """An ingest replica on the city edge writing to the database the api's registry is in."""
    ingest = settings.ingest.model_copy(
        update={
            "client_id": f"test-edge-ingest-{uuid.uuid4().hex[:6]}",
            "flush_interval_s": 0.05,
            "unknown_device_recheck_s": 0,
            "mqtt_username": "service.ingest",
            "mqtt_password": SecretStr(healthy_edge.passwords()["ingest"]),
        }
    )
    own = settings.model_copy(
        update={
            "ingest": ingest,
            "edge": EdgeSettings(
                broker="rabbitmq",
                amqp_url=",".join(
                    f"amqp://127.0.0.1:{healthy_edge.amqp_port(i)}/" for i in healthy_edge.nodes
                ),
            ),
        }
    )
    async with running_ingest(own) as running:
        await asyncio.wait_for(running.consumer.connected.wait(), 30)
        yield running


async def rejections_of(pool: asyncpg.Pool, device_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT reason, topic FROM ingest_rejections WHERE device_id = $1 ORDER BY reason",
        device_id,
    )


async def test_unrouted_topics_and_bad_readings_are_refused_and_echoed_to_the_device(
    edge_ingest: RunningIngest, edge_api: EdgeApi, db_pool: asyncpg.Pool
) -> None:
    login, spy_login = await commission(edge_api), await commission(edge_api)
    device_id, prefix = login["username"], login["topic_prefix"]
    me, spy = device(login), device(spy_login)
    assert not (await connect(edge_api, me, node=1)).is_failure
    assert not (await connect(edge_api, spy, node=2)).is_failure
    try:
        mine = me.subscribe(f"{prefix}errors")
        theirs = spy.subscribe(f"{prefix}errors")
        assert await asyncio.to_thread(me.wait_for, lambda: mine in me.subscribed)
        assert me.subscribed[mine] == [1]
        # RabbitMQ 3.10 answers a refused subscription by closing the connection (or, later
        # versions, with a failure code): either way the spy hears nothing.
        assert await asyncio.to_thread(
            spy.wait_for, lambda: theirs in spy.subscribed or bool(spy.disconnects)
        )
        assert spy.subscribed.get(theirs, [SUBSCRIPTION_REFUSED]) == [SUBSCRIPTION_REFUSED]
        spy.stop()

        ts = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
        acked = [
            me.publish(f"{prefix}telemetry/extra", b'{"vehicle_count": 1}'),
            me.publish(f"{prefix}telemetry", orjson.dumps({"ts": ts, "avg_speed_kmh": 900.0})),
        ]
        assert await asyncio.to_thread(me.wait_acked, acked)
        rows = await eventually(lambda: rejections_of(db_pool, device_id), lambda f: len(f) >= 2)
        assert [(r["reason"], r["topic"]) for r in rows] == [
            ("invalid_topic", f"{prefix}telemetry/extra"),
            ("out_of_range", f"{prefix}telemetry"),
        ]
        assert await asyncio.to_thread(me.wait_for, lambda: len(me.messages) >= 2)
    finally:
        me.close()
        spy.close()
    echoes = sorted(
        (topic, orjson.loads(payload)["reason"], orjson.loads(payload)["ts"])
        for topic, payload in me.messages
    )
    assert echoes == [
        (f"{prefix}errors", "invalid_topic", None),
        (f"{prefix}errors", "out_of_range", ts),
    ]
    assert spy.messages == []
    spied = await rejections_of(db_pool, spy_login["username"])
    assert [(r["reason"], r["topic"]) for r in spied] == [("topic_denied", f"{prefix}errors")]
