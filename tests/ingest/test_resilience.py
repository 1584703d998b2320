"""Ingest under failure, each test on a database and broker of its own so it can break them:
an ingester killed mid-stream, the database away, the broker restarted, two replicas sharing."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from core.config import Settings
from core.db import create_pool
from core.mqtt import connect, make_client, publish_when_possible, wait_published
from devices.contract import Kind, telemetry_topic
from migrations.runner import migrate
from stack.broker_auth import with_identities
from stack.services import MosquittoBroker, PostgresCluster, free_port
from tests.processes import IngestProcess
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
    rate_per_s: float | None = None,
    handed: list[int] | None = None,
) -> None:
    """A persistent-session publisher: what the broker has not acknowledged survives its restart.
    ``reconnect_delay_s`` is how long it waits before each reconnect attempt (firmware often
    waits nothing, or a random moment under a second); ``rate_per_s`` paces it like a device's
    steady stream instead of one burst; ``handed[0]`` counts the messages given to the client
    so far."""
    client = make_client(
        settings.mqtt_as(settings.simulator),
        client_id,
        clean_session=False,
        session_expiry_interval=3600,
    )
    if reconnect_delay_s is not None:
        client.set_config({"reconnect_delay": reconnect_delay_s})
    await connect(client, settings.mqtt_as(settings.simulator))
    started = time.monotonic()
    try:
        for n, (topic, payload) in enumerate(messages):
            await publish_when_possible(client, topic, payload)
            if handed is not None:
                handed[0] = n + 1
            if rate_per_s is not None:
                # Pacing that models the device's clock, not a wait for a condition.
                await asyncio.sleep(max(0.0, started + n / rate_per_s - time.monotonic()))
            elif n % 200 == 0:
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
        taken = [
            await replica.counter("alatau_ingest_messages_received_total") for replica in replicas
        ]
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
        # Batches the outage rolled back were retried: each stored reading counts once.
        everything = await services.pool.fetchval("SELECT count(*) FROM traffic_readings")
        assert await ingester.counter("alatau_ingest_readings_stored_total") == everything
    finally:
        ingester.stop()


def shares(messages: list[tuple[str, bytes]], publishers: int) -> list[list[tuple[str, bytes]]]:
    """The stream dealt to ``publishers`` devices' connections, each keeping its own order."""
    return [messages[n::publishers] for n in range(publishers)]


@pytest.mark.parametrize("reconnect", ["at_once", "within_a_second"])
async def test_broker_restart_mid_stream_loses_nothing_whenever_devices_reconnect(
    services: Services, reconnect: str
) -> None:
    """Devices come back as soon as the broker does (or a random moment under a second
    later), before ingest's own reconnect: the broker restored ingest's session with its
    ordinary subscription, so what they publish meanwhile is queued for ingest, not dropped."""
    messages = stream(20_000)
    ingester = IngestProcess(services.settings, "ingest-brokerdown")
    ingester.start()
    rng = random.Random(7)
    try:
        await wait_until_ingesting(services)
        publishers = [
            asyncio.create_task(
                publish_stream(
                    services.settings,
                    share,
                    f"pub-broker-{n}",
                    reconnect_delay_s=0.0 if reconnect == "at_once" else rng.uniform(0, 1),
                    rate_per_s=800,
                )
            )
            for n, share in enumerate(shares(messages, 5))
        ]
        await eventually(lambda: stored(services.pool), lambda n: n >= 3_000, timeout_s=60)
        await asyncio.to_thread(services.broker.stop)
        await asyncio.to_thread(services.broker.start)
        assert not any(p.done() for p in publishers), "the stream ended before the restart"
        await asyncio.gather(*publishers)
        await assert_all_stored_once(services, messages)
    finally:
        ingester.stop()


async def test_broker_kill_9_loses_only_readings_in_transit_at_the_kill(
    services: Services,
) -> None:
    """A broker killed outright comes back as of its last save (every 5 s). Once that save
    holds ingest's session and subscription, devices that reconnect at once lose nothing they
    publish after the kill, nor anything the broker had handed to ingest: Mosquitto
    acknowledges a publish before it passes it on, so only the few readings between the two
    at the moment of the kill can go (the README states it; the city edge confirms first)."""
    messages = stream(20_000)
    ingester = IngestProcess(services.settings, "ingest-brokerkill")
    ingester.start()
    try:
        await wait_until_ingesting(services)
        subscribed = snapshot(services.broker.db_path)
        await eventually(
            lambda: asyncio.to_thread(saved_since, services.broker.db_path, subscribed),
            bool,
            timeout_s=3 * services.broker.autosave_interval_s,
        )
        assert saved_since(services.broker.db_path, subscribed), "the broker never saved"
        parts = shares(messages, 5)
        handed = [[0] for _ in parts]
        publishers = [
            asyncio.create_task(
                publish_stream(
                    services.settings,
                    part,
                    f"pub-kill-{n}",
                    reconnect_delay_s=0,
                    rate_per_s=800,
                    handed=handed[n],
                )
            )
            for n, part in enumerate(parts)
        ]
        await eventually(lambda: stored(services.pool), lambda n: n >= 3_000, timeout_s=60)
        await asyncio.to_thread(services.broker.stop, signal.SIGKILL)
        before_kill = [count for (count,) in handed]
        await asyncio.to_thread(services.broker.start)
        assert not any(p.done() for p in publishers), "the stream ended before the kill"
        await asyncio.gather(*publishers)
        # Everything published after the kill must arrive; await exactly that, then look at
        # what went missing from before it.
        lost = await eventually(
            lambda: missing(services.pool, parts),
            lambda gone: all(index < before_kill[n] for n, index in gone),
            timeout_s=60,
        )
        logging.getLogger(__name__).warning("broker kill -9: %d readings lost", len(lost))
        assert all(index < before_kill[n] for n, index in lost), (lost, before_kill)
        assert len(lost) <= len(messages) // 100
        assert await stored(services.pool) >= len(messages) - len(lost)
    finally:
        ingester.stop()


async def missing(
    pool: asyncpg.Pool, parts: list[list[tuple[str, bytes]]]
) -> list[tuple[int, int]]:
    """(publisher, index) of every message of ``parts`` not stored."""
    keys = {
        (row["device_id"], row["ts"])
        for row in await pool.fetch(
            "SELECT device_id, ts FROM traffic_readings WHERE device_id LIKE 'dev-%'"
        )
    }
    return [
        (n, index)
        for n, part in enumerate(parts)
        for index, (topic, payload) in enumerate(part)
        if (topic.split("/")[2], datetime.fromisoformat(orjson.loads(payload)["ts"])) not in keys
    ]


Snapshot = tuple[int, int, int] | None


def snapshot(path: Path) -> Snapshot:
    """The broker's persistence file as it is now (None before its first save). The kernel's
    file times, not this process's clock: the suite may run with its clock moved."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def saved_since(path: Path, before: Snapshot) -> bool:
    """Whether the broker has written its persistence file since ``before`` was taken (it
    writes a new file and renames it over the old one)."""
    now = snapshot(path)
    return now is not None and now != before


async def test_two_replicas_on_one_shared_subscription_store_each_reading_once(
    services: Services,
) -> None:
    messages = stream(20_000)
    replicas = [IngestProcess(services.settings, f"ingest-r{n}", "ingest") for n in (1, 2)]
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
    stays = IngestProcess(services.settings, "ingest-stays", "ingest")
    leaves = IngestProcess(services.settings, "ingest-leaves", "ingest")
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
