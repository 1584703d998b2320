"""Real services for the whole test run: a private TimescaleDB and Mosquitto on free ports,
in a temporary folder, started once per session and removed at the end."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key
from core.config import Settings
from core.db import create_pool
from ingest.app import RunningIngest, running_ingest
from migrations.runner import migrate
from stack.broker_auth import with_identities
from stack.services import MosquittoBroker, PostgresCluster, free_port, remove_tree
from stack.tls import make_certificates
from tests.support import bearer


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its folders are private to our user, and as root the servers run
    # as their own system users, which must be able to reach their data folders.
    path = Path(tempfile.mkdtemp(prefix="alatau-test-"))
    path.chmod(0o755)
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def postgres(services_dir: Path) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(services_dir / "postgres", free_port())
    cluster.start()
    migrate(cluster.url)
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def broker(services_dir: Path) -> Iterator[MosquittoBroker]:
    """Anonymous access off, the services' logins in place, and a TLS listener."""
    mosquitto = MosquittoBroker(
        services_dir / "mosquitto",
        free_port(),
        tls_port=free_port(),
        tls_dir=make_certificates(services_dir / "tls"),
    )
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="session")
def settings(postgres: PostgresCluster, broker: MosquittoBroker) -> Settings:
    """Each process logs in as itself: ``settings.mqtt_as(settings.ingest)`` and so on; tests
    publish as the simulator and subscribe as the api."""
    plain = Settings(
        environment="test",
        database_url=postgres.url,
        mqtt_url=broker.url,
        log_level=os.environ.get("ALATAU_TEST_LOG_LEVEL", "WARNING"),
    )
    return with_identities(plain, broker.service_passwords())


@pytest.fixture(scope="session")
async def db_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings, "tests")
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def api_keys(db_pool: asyncpg.Pool) -> dict[Role, str]:
    """One key per role, issued as ``python -m api.keys create`` would."""
    keys: dict[Role, str] = {}
    for role in Role:
        body = ApiKeyCreate(name=f"test-{role.value}", role=role)
        keys[role] = (await issue_key(db_pool, body, created_by=None)).token
    return keys


@pytest.fixture(scope="session")
def reader_key(api_keys: dict[Role, str]) -> str:
    return api_keys[Role.READER]


@pytest.fixture(scope="session")
def admin_headers(api_keys: dict[Role, str]) -> dict[str, str]:
    return bearer(api_keys[Role.ADMIN])


@pytest.fixture
def unique() -> str:
    """A short unique token: each test names its devices with it, so tests never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def ingest_settings(settings: Settings) -> Settings:
    """Settings of the test run's ingest replica: quick flushes, a session of its own."""
    token = uuid.uuid4().hex[:8]
    ingest = settings.ingest.model_copy(
        update={
            "client_id": f"test-ingest-{token}",
            "share_group": f"test-{token}",
            "flush_interval_s": 0.05,
            "session_expiry_s": 60,
            "unknown_device_recheck_s": 0,
        }
    )
    return settings.model_copy(update={"ingest": ingest})


@pytest.fixture(scope="session")
async def ingest(ingest_settings: Settings) -> AsyncIterator[RunningIngest]:
    """One ingest replica shared by the tests that need the pipeline running."""
    async with running_ingest(ingest_settings) as running:
        await running.consumer.connected.wait()
        yield running


@pytest.fixture(scope="session")
async def api_url(settings: Settings) -> AsyncIterator[str]:
    """The real API served by uvicorn on a free port, for tests that speak HTTP to it."""
    import asyncio

    import uvicorn

    from api.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
