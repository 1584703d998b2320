"""Ingest under failure, each test on a database and broker of its own so it can break them:
an ingester killed mid-stream, the database away, the broker restarted, two replicas sharing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from core.config import Settings
from core.db import create_pool
from core.mqtt import connect, make_client, publish_when_possible, wait_published
from devices.contract import Kind, telemetry_topic
from migrations.runner import migrate
from stack.broker_auth import login_environment, with_identities
from stack.services import MosquittoBroker, PostgresCluster, free_port
from tests.support import eventually, register

ROOT = Path(__file__).resolve().parents[2]
DEVICES = 50


@dataclass
class Services:
    postgres: PostgresCluster
    broker: MosquittoBroker
    settings: Settings
    pool: asyncpg.Pool


@pytest.fixture
def own_services(services_dir: Path) -> Iterator[tuple[PostgresCluster, MosquittoBroker]]:
    folder = services_dir / f"own-{uuid.uuid4().hex[:6]}"
    postgres = PostgresCluster(folder / "postgres", free_port())
    broker = MosquittoBroker(folder / "mosquitto", free_port())
    postgres.start()
    migrate(postgres.url)
    broker.start()
    yield postgres, broker
    broker.stop()
    postgres.stop(mode="immediate")


@pytest.fixture
async def services(
    own_services: tuple[PostgresCluster, MosquittoBroker], settings: Settings
) -> AsyncIterator[Services]:
    postgres, broker = own_services
    own = with_identities(
        settings.model_copy(update={"database_url": postgres.url, "mqtt_url": broker.url}),
        broker.service_passwords(),
    )
    pool = await create_pool(own, "tests")
    for n in range(DEVICES):
        await register(pool, f"dev-{n:03d}", Kind.TRAFFIC)
    await register(pool, "probe", Kind.TRAFFIC)
    yield Services(postgres, broker, own, pool)
    await pool.close()


class IngestProcess:
    """``python -m ingest`` as a real process, so it can be killed like one."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "MQTT_URL": settings.mqtt_url,
            **login_environment(settings),
            "ALATAU_INGEST__CLIENT_ID": client_id,
            "ALATAU_INGEST__SHARE_GROUP": "ingest",
            "ALATAU_INGEST__FLUSH_INTERVAL_S": "0.05",
            "ALATAU_INGEST__RETRY_MAX_S": "1",
            "ALATAU_LOG_LEVEL": "WARNING",
            "ALATAU_INGEST__METRICS_PORT": str(self.metrics_port),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "ingest"], env=self.env, cwd=ROOT)

    async def messages_received(self) -> float:
        """What this replica has taken from the broker so far; 0 before its exporter is up."""
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        except httpx.HTTPError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("alatau_ingest_messages_received_total{")
        )

    async def exit_code(self) -> int | None:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, 30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stream(count: int) -> list[tuple[str, bytes]]:
    """``count`` single-reading messages spread over the devices, each (device, ts) unique."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    messages = []
    for n in range(count):
        device = f"dev-{n % DEVICES:03d}"
        ts = start + timedelta(seconds=n // DEVICES)
        reading = {"ts": ts.isoformat(), "vehicle_count": n % 97, "interval_s": 1.0}
        messages.append((telemetry_topic(Kind.TRAFFIC, device), orjson.dumps(reading)))
    return messages


async def publish_stream(
    settings: Settings,
    messages: list[tuple[str, bytes]],
    client_id: str,
    reconnect_delay_s: float | None = None,
) -> None:
    """A persistent-session publisher: what the broker has not acknowledged survives its restart."""
    client = make_client(
        settings.mqtt_as(settings.simulator),
        client_id,
        clean_session=False,
        session_expiry_interval=3600,
    )
    if reconnect_delay_s is not None:
        client.set_config({"reconnect_delay": reconnect_delay_s})
    await connect(client, settings.mqtt_as(settings.simulator))
    try:
        for n, (topic, payload) in enumerate(messages):
            await publish_when_possible(client, topic, payload)
            if n % 200 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(wait_published(client), timeout=120)
    finally:
        await client.disconnect()


async def wait_until_ingesting(services: Services, *replicas: IngestProcess) -> None:
    """Publish a probe until one is stored and each of ``replicas`` has taken one: then their
    subscriptions are in place (the broker deals a shared subscription's messages in turn)."""
    for attempt in range(200):
        reading = {"ts": datetime.now(UTC).isoformat(), "vehicle_count": attempt}
        client = make_client(
            services.settings.mqtt_as(services.settings.simulator), f"probe-{uuid.uuid4().hex[:6]}"
        )
        await connect(client, services.settings.mqtt_as(services.settings.simulator))
        client.publish(telemetry_topic(Kind.TRAFFIC, "probe"), orjson.dumps(reading), qos=1)
        await wait_published(client)
        await client.disconnect()
        await asyncio.sleep(0.1)  # the polling interval
        probes = await services.pool.fetchval(
            "SELECT count(*) FROM traffic_readings WHERE device_id = 'probe'"
        )
        taken = [await replica.messages_received() for replica in replicas]
        if probes and all(taken):
            return
    raise AssertionError("ingest never stored a probe reading on every replica")


async def stored(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM traffic_readings WHERE device_id LIKE 'dev-%'"
    )
    return count


async def assert_all_stored_once(
    services: Services, messages: list[tuple[str, bytes]], timeout_s: float = 180
) -> None:
    total = await eventually(
        lambda: stored(services.pool), lambda n: n >= len(messages), timeout_s=timeout_s
    )
    assert total == len(messages)
    row = await services.pool.fetchrow(
        "SELECT count(DISTINCT (device_id, ts)) AS distinct_rows, sum(vehicle_count) AS vehicles"
        " FROM traffic_readings WHERE device_id LIKE 'dev-%'"
    )
    assert row is not None
    assert row["distinct_rows"] == len(messages)
    assert row["vehicles"] == sum(orjson.loads(p)["vehicle_count"] for _, p in messages)


async def test_kill_9_mid_stream_then_restart_stores_all_50000_once(services: Services) -> None:
    messages = stream(50_000)
    ingester = IngestProcess(services.settings, "ingest-crash")
    ingester.start()
    try:
        await wait_until_ingesting(services)
        publisher = asyncio.create_task(publish_stream(services.settings, messages, "pub-crash"))
        await eventually(lambda: stored(services.pool), lambda n: n >= 10_000, timeout_s=60)
        ingester.kill()
        killed_at = await stored(services.pool)
        assert killed_at < len(messages), "the stream ended before the kill; nothing was tested"
        await asyncio.sleep(1)  # the outage: the devices go on publishing to the broker
        ingester.start()
        await publisher
        await assert_all_stored_once(services, messages)
    finally:
        ingester.stop()


async def test_database_away_for_10_seconds_loses_nothing(services: Services) -> None:
    messages = stream(20_000)
    ingester = IngestProcess(services.settings, "ingest-dbdown")
    ingester.start()
    try:
        await wait_until_ingesting(services)
        publisher = asyncio.create_task(publish_stream(services.settings, messages, "pub-dbdown"))
        await eventually(lambda: stored(services.pool), lambda n: n >= 3_000, timeout_s=60)
        await services.pool.expire_connections()
        await asyncio.to_thread(services.postgres.stop, "fast")
        await asyncio.sleep(10)  # the outage the test is named after
        await asyncio.to_thread(services.postgres.start)
        await publisher
        await assert_all_stored_once(services, messages)
    finally:
        ingester.stop()


async def test_broker_restart_mid_stream_loses_nothing(services: Services) -> None:
    messages = stream(20_000)
    ingester = IngestProcess(services.settings, "ingest-brokerdown")
    ingester.start()
    try:
        await wait_until_ingesting(services)
        # Mosquitto 2.0.11 restores a persistent session after a restart but not its shared
        # subscription: what devices publish before ingest has resubscribed matches nobody and
        # is dropped by the broker (README, Ingest guarantees). Ingest resubscribes on every
        # reconnect, within its 2 s reconnect delay; these devices come back after 8 s, as a
        # fleet backing off would, which is the case ingest can guarantee.
        publisher = asyncio.create_task(
            publish_stream(services.settings, messages, "pub-broker", reconnect_delay_s=8)
        )
        await eventually(lambda: stored(services.pool), lambda n: n >= 3_000, timeout_s=60)
        await asyncio.to_thread(services.broker.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(services.broker.start)
        await publisher
        await assert_all_stored_once(services, messages)
    finally:
        ingester.stop()


async def test_two_replicas_on_one_shared_subscription_store_each_reading_once(
    services: Services,
) -> None:
    messages = stream(20_000)
    replicas = [IngestProcess(services.settings, f"ingest-r{n}") for n in (1, 2)]
    for replica in replicas:
        replica.start()
    try:
        await wait_until_ingesting(services, *replicas)
        await publish_stream(services.settings, messages, "pub-shared")
        await assert_all_stored_once(services, messages)
        duplicates = await services.pool.fetchval("SELECT count(*) FROM ingest_rejections")
        assert duplicates == 0
    finally:
        for replica in replicas:
            replica.stop()


async def test_a_retired_replica_leaves_nothing_behind_in_its_session(services: Services) -> None:
    """Scaling down: Mosquitto keeps routing a share of the stream to a stopped member's
    persistent session. A replica stopped with retire_on_stop drains and ends its session, so
    what is published afterwards all reaches the replica that stays."""
    stays = IngestProcess(services.settings, "ingest-stays")
    leaves = IngestProcess(services.settings, "ingest-leaves")
    leaves.env["ALATAU_INGEST__RETIRE_ON_STOP"] = "true"
    stays.start()
    leaves.start()
    try:
        # Both subscribed: otherwise the leaving one would have no share to leave behind.
        await wait_until_ingesting(services, stays, leaves)
        await asyncio.to_thread(leaves.stop)
        assert await leaves.exit_code() == 0
        messages = stream(4_000)
        await publish_stream(services.settings, messages, "pub-retire")
        await assert_all_stored_once(services, messages, timeout_s=30)
    finally:
        stays.stop()
        leaves.stop()
