"""The rollup worker under database outages, on a TimescaleDB of its own that it can stop: the
database away mid-transaction, away before the worker's first query, not up when it starts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from structlog.testing import capture_logs

from core.config import RollupSettings, Settings
from core.db import create_pool
from devices.contract import Kind
from migrations.runner import migrate
from rollups import service as rollups
from stack.services import PostgresCluster, free_port
from tests.support import eventually, register

ROOT = Path(__file__).resolve().parents[2]
RETRYING = "database unavailable, retrying"
# Quick tries, so an outage of a few seconds shows several of them and the growth between them.
FAST = RollupSettings(interval_s=0.05, retry_initial_s=0.2, retry_max_s=1.0)
MINUTES = 3
PER_MINUTE = 10


@pytest.fixture(scope="module")
def cluster(services_dir: Path) -> Iterator[PostgresCluster]:
    postgres = PostgresCluster(services_dir / f"rollups-{uuid.uuid4().hex[:6]}", free_port())
    postgres.start()
    migrate(postgres.url)
    yield postgres
    postgres.stop(mode="immediate")


@pytest.fixture
async def pool(cluster: PostgresCluster) -> AsyncIterator[asyncpg.Pool]:
    """The test's own connections; each test leaves the database running."""
    pool = await create_pool(own_settings(cluster), "tests")
    yield pool
    await asyncio.to_thread(cluster.start)
    await pool.close()


def own_settings(cluster: PostgresCluster) -> Settings:
    return Settings(environment="test", database_url=cluster.url, rollups=FAST)


async def dirty_device(pool: asyncpg.Pool, device: str) -> tuple[int, int]:
    """A traffic device with readings over the last minutes, all marked dirty as ingest would;
    returns how many readings and their vehicle count."""
    await register(pool, device, Kind.TRAFFIC)
    # Young readings: retention, which runs in the worker, judges age by the clock.
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    rows = [
        (device, first + timedelta(minutes=m, seconds=6 * s), m * PER_MINUTE + s, 6.0)
        for m in range(MINUTES)
        for s in range(PER_MINUTE)
    ]
    await pool.executemany(
        "INSERT INTO traffic_readings (device_id, ts, vehicle_count, interval_s)"
        " VALUES ($1, $2, $3, $4)",
        rows,
    )
    await pool.executemany(
        "INSERT INTO rollup_dirty (kind, device_id, minute) VALUES ('traffic', $1, $2)",
        [(device, first + timedelta(minutes=m)) for m in range(MINUTES)],
    )
    return len(rows), sum(row[2] for row in rows)


async def rolled_up(pool: asyncpg.Pool, device: str) -> tuple[int, int, int] | None:
    """(dirty minutes left, readings and vehicle count in the hour tier), None while the
    database does not answer."""
    try:
        dirty = await pool.fetchval(
            "SELECT count(*) FROM rollup_dirty WHERE device_id = $1", device
        )
        hours = await pool.fetchrow(
            "SELECT coalesce(sum(readings), 0) AS n, coalesce(sum(vehicle_count_sum), 0) AS s"
            " FROM traffic_rollup_1h WHERE device_id = $1",
            device,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    assert hours is not None
    return dirty, hours["n"], hours["s"]


async def waiting_for_lock(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'rollups' AND wait_event_type = 'Lock'"
        )
    )


def retries(logs: Sequence[Mapping[str, Any]], step: str) -> list[float]:
    """The waits the worker announced before retrying ``step``."""
    return [e["retry_in_s"] for e in logs if e["event"] == RETRYING and e["step"] == step]


async def retried(logs: Sequence[Mapping[str, Any]], step: str, at_least: int = 4) -> list[float]:
    """Once ``step`` has been retried ``at_least`` times (or waiting gave up), its waits."""

    async def probe() -> list[float]:
        return retries(logs, step)

    return await eventually(probe, lambda waits: len(waits) >= at_least)


def assert_backs_off(waits: list[float]) -> None:
    """Doubling from 0.2 s, capped at 1 s: never a busy loop."""
    assert waits[:4] == [0.2, 0.4, 0.8, 1.0]
    assert all(wait == FAST.retry_max_s for wait in waits[4:])


async def test_an_outage_mid_transaction_leaves_the_minutes_dirty_until_a_commit(
    cluster: PostgresCluster, pool: asyncpg.Pool
) -> None:
    device = f"outage-{uuid.uuid4().hex[:8]}"
    readings, vehicles = await dirty_device(pool, device)
    # Holding the hour tier makes the worker wait inside its transaction, after it has claimed
    # (deleted) the dirty minutes and written their 1-minute rows: the outage strikes there.
    blocker = await asyncpg.connect(cluster.url)
    await blocker.execute("BEGIN; LOCK TABLE traffic_rollup_1h IN EXCLUSIVE MODE")
    worker_pool = await create_pool(own_settings(cluster), "rollups")
    stop = asyncio.Event()
    with capture_logs() as logs:
        worker = asyncio.create_task(rollups.run(worker_pool, FAST, stop))
        try:
            assert await eventually(lambda: waiting_for_lock(pool), bool)
            await pool.expire_connections()
            await asyncio.to_thread(cluster.stop, "fast")
            await retried(logs, "roll up")
            assert not worker.done()
            await asyncio.to_thread(cluster.start)
            state = await eventually(
                lambda: rolled_up(pool, device), lambda s: s == (0, readings, vehicles)
            )
            assert state == (0, readings, vehicles)
        finally:
            stop.set()
            await asyncio.wait_for(worker, timeout=30)
            blocker.terminate()
            await worker_pool.close()
    assert_backs_off(retries(logs, "roll up"))
    minutes = await pool.fetchval(
        "SELECT count(*) FROM traffic_rollup_1m WHERE device_id = $1", device
    )
    assert minutes == MINUTES


async def test_a_database_gone_before_the_first_query_is_waited_for(
    cluster: PostgresCluster, pool: asyncpg.Pool
) -> None:
    device = f"prepare-{uuid.uuid4().hex[:8]}"
    readings, vehicles = await dirty_device(pool, device)
    worker_pool = await create_pool(own_settings(cluster), "rollups")
    await pool.expire_connections()
    await asyncio.to_thread(cluster.stop, "fast")
    stop = asyncio.Event()
    with capture_logs() as logs:
        worker = asyncio.create_task(rollups.run(worker_pool, FAST, stop))
        try:
            await retried(logs, "prepare")
            assert not worker.done()
            await asyncio.to_thread(cluster.start)
            state = await eventually(
                lambda: rolled_up(pool, device), lambda s: s == (0, readings, vehicles)
            )
            assert state == (0, readings, vehicles)
        finally:
            stop.set()
            await asyncio.wait_for(worker, timeout=30)
            await worker_pool.close()
    assert_backs_off(retries(logs, "prepare"))


class WorkerProcess:
    """``python -m rollups`` as a real process, its JSON log lines in a file."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        self.log_path = log_path
        env = {
            **os.environ,
            "ALATAU_DATABASE_URL": database_url,
            "ALATAU_LOG_FORMAT": "json",
            "ALATAU_LOG_LEVEL": "INFO",
            "ALATAU_ROLLUPS__INTERVAL_S": str(FAST.interval_s),
            "ALATAU_ROLLUPS__RETRY_INITIAL_S": str(FAST.retry_initial_s),
            "ALATAU_ROLLUPS__RETRY_MAX_S": str(FAST.retry_max_s),
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rollups"], env=env, cwd=ROOT, stderr=log
            )

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # a traceback's lines
        return events

    async def retried(self, step: str, at_least: int = 4) -> list[float]:
        """Once ``step`` has been retried ``at_least`` times (or the process ended), its waits."""

        async def probe() -> list[float]:
            return retries(self.events(), step)

        return await eventually(
            probe, lambda waits: len(waits) >= at_least or self.process.poll() is not None
        )

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


async def test_a_worker_started_before_the_database_begins_once_it_is_up(
    cluster: PostgresCluster, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    device = f"early-{uuid.uuid4().hex[:8]}"
    readings, vehicles = await dirty_device(pool, device)
    await pool.expire_connections()
    await asyncio.to_thread(cluster.stop, "fast")
    worker = WorkerProcess(cluster.url, tmp_path / "rollups.log")
    try:
        waits = await worker.retried("connect")
        assert worker.process.poll() is None, worker.log_path.read_text()
        assert_backs_off(waits)
        await asyncio.to_thread(cluster.start)
        state = await eventually(
            lambda: rolled_up(pool, device), lambda s: s == (0, readings, vehicles)
        )
        assert state == (0, readings, vehicles), worker.log_path.read_text()
    finally:
        assert await worker.stop() == 0, worker.log_path.read_text()


async def test_a_worker_waiting_for_the_database_stops_cleanly(tmp_path: Path) -> None:
    nowhere = f"postgresql://alatau@127.0.0.1:{free_port()}/alatau"
    worker = WorkerProcess(nowhere, tmp_path / "rollups.log")
    try:
        waits = await worker.retried("connect", at_least=1)
        assert waits, worker.log_path.read_text()
    finally:
        assert await worker.stop() == 0, worker.log_path.read_text()
