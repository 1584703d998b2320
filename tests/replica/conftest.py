"""A primary of its own with one hot standby (pg_basebackup -R, streaming replication), and the
api pointed at both: ``DATABASE_URL`` the primary, ``DATABASE_READ_URL`` the standby.

The pair is not the session's database: these tests stop the primary, which the rest of the
suite must never see."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key
from core.config import Settings
from core.db import create_pool
from migrations.runner import migrate
from stack.services import PostgresCluster, StandbyCluster, free_port
from tests.live.conftest import quick_settings
from tests.support import eventually

REPLAY_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def primary(services_dir: Path) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(services_dir / "replica-primary", free_port())
    cluster.start()
    migrate(cluster.url)
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def standby(services_dir: Path, primary: PostgresCluster) -> Iterator[StandbyCluster]:
    cluster = StandbyCluster(services_dir / "replica-standby", free_port(), primary=primary)
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def replicated_settings(
    settings: Settings, primary: PostgresCluster, standby: StandbyCluster
) -> Settings:
    """The session's broker and logins; writes on the primary, lag-tolerant reads on the
    standby; live and alert timings quick."""
    return quick_settings(settings).model_copy(
        update={"database_url": primary.url, "database_read_url": standby.url}
    )


@pytest.fixture(scope="session")
async def primary_pool(replicated_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(replicated_settings, "tests")
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def standby_pool(replicated_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert replicated_settings.database_read_url is not None
    pool = await create_pool(
        replicated_settings, "tests-standby", url=replicated_settings.database_read_url
    )
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def replica_keys(primary_pool: asyncpg.Pool) -> dict[Role, str]:
    """One key per role, issued on the primary (so also on the standby, once replayed)."""
    keys: dict[Role, str] = {}
    for role in Role:
        body = ApiKeyCreate(name=f"replica-{role.value}", role=role)
        keys[role] = (await issue_key(primary_pool, body, created_by=None)).token
    return keys


async def replayed(primary_pool: asyncpg.Pool, standby_pool: asyncpg.Pool) -> None:
    """Return once the standby has replayed everything the primary has written so far."""
    target = await primary_pool.fetchval("SELECT pg_current_wal_lsn()")

    async def caught_up() -> bool:
        done: bool = await standby_pool.fetchval(
            "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target
        )
        return done

    assert await eventually(caught_up, bool, timeout_s=REPLAY_TIMEOUT_S), (
        f"the standby did not replay up to {target} within {REPLAY_TIMEOUT_S:.0f}s"
    )


@asynccontextmanager
async def replay_paused(standby_pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Hold the standby's replay: what the primary commits meanwhile is not visible there, so
    an answer that has it can only have come from the primary."""
    await standby_pool.execute("SELECT pg_wal_replay_pause()")

    async def state() -> str:
        paused: str = await standby_pool.fetchval("SELECT pg_get_wal_replay_pause_state()")
        return paused

    assert await eventually(state, lambda s: s == "paused") == "paused"
    try:
        yield
    finally:
        await standby_pool.execute("SELECT pg_wal_replay_resume()")


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    """The real app served by uvicorn on a free port, its lifespan started; the app too, so a
    test can reach its live service."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
