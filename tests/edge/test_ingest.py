"""Ingest on the city edge: competing consumers of the quorum queue, under faults.

Devices publish QoS 1 readings over MQTT 3.1.1 to the three nodes, each moving to the next node
the moment its connection drops (firmware with a host list), with persistent sessions. Every
reading a device saw acknowledged must be stored, and nothing twice: acknowledged <= stored <=
sent, per device, with (device, ts) unique in the table."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from core.config import EdgeSettings, Settings
from core.db import create_pool
from devices.contract import Kind
from migrations.runner import migrate
from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_topology import INGEST_QUEUE, quorum_members
from stack.services import PostgresCluster, free_port
from tests.edge.device import DeviceFactory, Stream
from tests.processes import IngestProcess
from tests.support import eventually, register

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def edge_postgres(services_dir: Path) -> Iterator[PostgresCluster]:
    """A database of these tests' own: one of them restarts it."""
    cluster = PostgresCluster(services_dir / "edge-postgres", free_port())
    cluster.start()
    migrate(cluster.url)
    yield cluster
    cluster.stop(mode="immediate")


@dataclass
class EdgeIngest:
    edge: RabbitCluster
    postgres: PostgresCluster
    settings: Settings
    pool: asyncpg.Pool

    def replica(self, name: str, first_node: int) -> IngestProcess:
        """An ingest replica that tries the nodes from ``first_node`` on."""
        nodes = [*self.edge.nodes[first_node - 1 :], *self.edge.nodes[: first_node - 1]]
        urls = ",".join(f"amqp://127.0.0.1:{self.edge.amqp_port(i)}/" for i in nodes)
        return IngestProcess(
            self.settings,
            name,
            ALATAU_EDGE__BROKER="rabbitmq",
            ALATAU_EDGE__AMQP_URL=urls,
            ALATAU_EDGE__RECONNECT_DELAY_S="0.2",
        )


@pytest.fixture
async def edge_ingest(
    healthy_edge: RabbitCluster, edge_postgres: PostgresCluster, settings: Settings
) -> AsyncIterator[EdgeIngest]:
    passwords = healthy_edge.passwords()
    ingest = settings.ingest.model_copy(
        update={"mqtt_username": "service.ingest", "mqtt_password": SecretStr(passwords["ingest"])}
    )
    own = settings.model_copy(
        update={
            "database_url": edge_postgres.url,
            "ingest": ingest,
            "edge": EdgeSettings(broker="rabbitmq"),
        }
    )
    pool = await create_pool(own, "tests")
    try:
        yield EdgeIngest(healthy_edge, edge_postgres, own, pool)
    finally:
        await pool.close()


def traffic_readings(start: datetime) -> Callable[[str, int], tuple[str, bytes]]:
    """Reading ``n`` of a device: at ``start`` plus n milliseconds, so each is its own key."""
    base = int(start.timestamp() * 1000)

    def message(device_id: str, n: int) -> tuple[str, bytes]:
        reading = {"ts": base + n, "vehicle_count": n % 100, "interval_s": 1.0}
        return f"alatau/traffic/{device_id}/telemetry", orjson.dumps(reading)

    return message


@dataclass
class Fleet:
    """Devices streaming readings in threads, each with its own list of nodes to try."""

    streams: list[Stream]
    start: datetime
    threads: list[threading.Thread]

    def stop(self) -> None:
        for stream in self.streams:
            stream.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        for stream in self.streams:
            stream.device.close()

    def acked(self, stream: Stream) -> int:
        return len(stream.acked_sequences())


async def start_fleet(ingest: EdgeIngest, device_factory: DeviceFactory, devices: int = 3) -> Fleet:
    edge = ingest.edge
    start = datetime.now(UTC) - timedelta(hours=1)
    message = traffic_readings(start)
    streams = []
    for n in range(devices):
        first = edge.nodes[n % len(edge.nodes)]
        order = [*edge.nodes[first - 1 :], *edge.nodes[: first - 1]]
        device = device_factory(clean_session=False, client_id=None)
        await register(ingest.pool, device.username, Kind.TRAFFIC)
        stream = Stream(device, [edge.mqtt_port(i) for i in order], message=message)
        assert not device.connect(stream.ports[0]).is_failure
        streams.append(stream)
    threads = [threading.Thread(target=s.run, daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    return Fleet(streams, start, threads)


@dataclass(frozen=True)
class Stored:
    """One look at the table: per device, the reading numbers in it, and how many rows."""

    numbers: dict[str, set[int]]
    rows: int


async def stored(ingest: EdgeIngest, fleet: Fleet) -> Stored:
    base = fleet.start.replace(microsecond=fleet.start.microsecond // 1000 * 1000)
    rows = await ingest.pool.fetch(
        "SELECT device_id, ts FROM traffic_readings WHERE device_id = ANY($1::text[])",
        [s.device.username for s in fleet.streams],
    )
    found: dict[str, set[int]] = {s.device.username: set() for s in fleet.streams}
    for row in rows:
        found[row["device_id"]].add(round((row["ts"] - base).total_seconds() * 1000))
    return Stored(found, len(rows))


async def assert_exactly_once(ingest: EdgeIngest, fleet: Fleet, timeout_s: float = 90) -> float:
    """Wait until every acknowledged reading is stored; acknowledged <= stored <= sent. Returns
    how long the wait took."""
    acked = {s.device.username: s.acked_sequences() for s in fleet.streams}
    sent = {s.device.username: s.sent_sequences() for s in fleet.streams}
    waited = time.monotonic()
    snapshot = await eventually(
        lambda: stored(ingest, fleet),
        lambda got: all(acked[name] <= got.numbers[name] for name in acked),
        timeout_s=timeout_s,
    )
    waited = time.monotonic() - waited
    found = snapshot.numbers
    for name, wanted in acked.items():
        assert wanted - found[name] == set(), f"{name}: acknowledged readings not stored"
        assert found[name] <= sent[name], f"{name}: stored what was never sent"
    # From the same look at the table: readings the brokers still deliver (sent, never
    # acknowledged) go on being stored after it, and must not count as doubles.
    assert snapshot.rows == sum(len(numbers) for numbers in found.values()), "stored twice"
    return waited


def until_acked_more(fleet: Fleet, more: int, timeout_s: float = 60) -> None:
    """Block until every device has ``more`` further readings acknowledged."""
    for stream, mark in [(s, fleet.acked(s)) for s in fleet.streams]:
        grown = functools.partial(_acked_at_least, fleet, stream, mark + more)
        assert stream.device.wait_for(grown, timeout_s), stream.device.username


def _acked_at_least(fleet: Fleet, stream: Stream, count: int) -> bool:
    return fleet.acked(stream) >= count


async def test_kill_9_of_the_queue_leaders_node_stores_every_reading_once(
    edge_ingest: EdgeIngest, device_factory: DeviceFactory
) -> None:
    edge = edge_ingest.edge
    replicas = [edge_ingest.replica("edge-ingest-a", 1), edge_ingest.replica("edge-ingest-b", 2)]
    for replica in replicas:
        replica.start()
    try:
        fleet = await start_fleet(edge_ingest, device_factory)
        try:
            await asyncio.to_thread(until_acked_more, fleet, 500)
            with edge.admin_client() as client:
                leader = quorum_members(client, "/", INGEST_QUEUE)["leader"]
            victim = next(i for i in edge.nodes if edge.node_name(i) == leader)
            await asyncio.to_thread(edge.kill_node, victim, signal.SIGKILL)
            # Every device keeps going, those on the dead node after moving to another.
            await asyncio.to_thread(until_acked_more, fleet, 500)
        finally:
            fleet.stop()
        await asyncio.to_thread(edge.start_node, victim)
        waited = await assert_exactly_once(edge_ingest, fleet)
        log.warning("kill -9 of the leader's node: all acknowledged stored %.1fs later", waited)
    finally:
        for replica in replicas:
            replica.stop()


async def test_kill_9_of_one_ingest_replica_leaves_its_share_to_the_other(
    edge_ingest: EdgeIngest, device_factory: DeviceFactory
) -> None:
    doomed = edge_ingest.replica("edge-ingest-doomed", 1)
    stays = edge_ingest.replica("edge-ingest-stays", 2)
    doomed.start()
    stays.start()
    try:
        fleet = await start_fleet(edge_ingest, device_factory)
        try:
            await asyncio.to_thread(until_acked_more, fleet, 500)
            await eventually(
                lambda: doomed.counter("alatau_ingest_readings_stored_total"), lambda n: n > 0
            )
            doomed.kill()
            killed_at = time.monotonic()
            before = await stays.counter("alatau_ingest_readings_stored_total")
            await asyncio.to_thread(until_acked_more, fleet, 500)
        finally:
            fleet.stop()
        await assert_exactly_once(edge_ingest, fleet)
        taken_over = time.monotonic() - killed_at
        assert await stays.counter("alatau_ingest_readings_stored_total") > before
        log.warning(
            "kill -9 of an ingest replica: the other had stored everything %.1fs after",
            taken_over,
        )
    finally:
        doomed.stop()
        stays.stop()


async def test_a_timescaledb_restart_loses_nothing(
    edge_ingest: EdgeIngest, device_factory: DeviceFactory
) -> None:
    replica = edge_ingest.replica("edge-ingest-db", 3)
    replica.start()
    try:
        fleet = await start_fleet(edge_ingest, device_factory)
        try:
            await asyncio.to_thread(until_acked_more, fleet, 300)
            await edge_ingest.pool.expire_connections()
            await asyncio.to_thread(edge_ingest.postgres.stop, "fast")
            # Devices go on publishing into the queue while the database is away.
            await asyncio.to_thread(until_acked_more, fleet, 300)
            await asyncio.to_thread(edge_ingest.postgres.start)
            await asyncio.to_thread(until_acked_more, fleet, 300)
        finally:
            fleet.stop()
        await assert_exactly_once(edge_ingest, fleet)
    finally:
        replica.stop()
