"""One real 3-node RabbitMQ cluster for the edge's tests, on free ports, with the HTTP auth
backend pointed at a logging server of the tests' own."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.config import EdgeSettings, Settings
from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_config import EdgeConfig, NodePorts
from stack.rabbitmq_topology import INGEST_QUEUE, wait_quorum_online
from stack.services import free_port
from tests.edge.authserver import AuthServer
from tests.edge.device import Device, DeviceFactory
from tests.live.conftest import quick_settings, running_api

# Short enough that a test can watch an allow expire, long enough to see it kept.
AUTH_CACHE_TTL_MS = 2_000


@pytest.fixture(scope="session")
def auth_server() -> Iterator[AuthServer]:
    server = AuthServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def edge(services_dir: Path, auth_server: AuthServer) -> Iterator[RabbitCluster]:
    ports = [NodePorts(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    cluster = RabbitCluster(
        services_dir / "rabbitmq",
        ports,
        epmd_port=free_port(),
        config=EdgeConfig(
            auth_url=auth_server.url,
            auth_http_method="post",
            auth_cache_ttl_ms=AUTH_CACHE_TTL_MS,
            memory_high_watermark="768MiB",
        ),
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def healthy_edge(edge: RabbitCluster) -> Iterator[RabbitCluster]:
    """The cluster with every node running and the ingest queue on all of them, before and
    after the test (fault tests bring nodes back)."""
    _restore(edge)
    yield edge
    _restore(edge)


def _restore(edge: RabbitCluster) -> None:
    for i in edge.nodes:
        if edge.node_pid(i) is None:
            edge.start_node(i)
    with edge.admin_client() as client:
        wait_quorum_online(client, edge.config.vhost, INGEST_QUEUE, len(edge.nodes))


@pytest.fixture
def admin(edge: RabbitCluster) -> Iterator[httpx.Client]:
    with edge.admin_client() as client:
        yield client


@pytest.fixture
def device_factory(auth_server: AuthServer) -> Iterator[DeviceFactory]:
    """``make(name, clean_session=True)``: a device the auth server knows, closed after."""
    made: list[Device] = []

    def make(
        name: str | None = None,
        *,
        clean_session: bool = True,
        password: str | None = None,
        client_id: str | None = None,
    ) -> Device:
        device_id = name or f"dev-{uuid.uuid4().hex[:10]}"
        secret = auth_server.devices.setdefault(device_id, uuid.uuid4().hex)
        device = Device(device_id, password or secret, client_id or f"{device_id}-c", clean_session)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


@dataclass
class EdgeApi:
    url: str
    edge: RabbitCluster
    headers: dict[str, str]


@asynccontextmanager
async def serving_edge_api(
    edge: RabbitCluster,
    auth_server: AuthServer,
    settings: Settings,
    admin_headers: dict[str, str],
    *,
    live: bool = False,
) -> AsyncIterator[EdgeApi]:
    """The real api on the city edge: the cluster's login checks are passed on to it, it drops
    devices' connections through the management API and (with ``live``) feeds live clients
    from a queue of its own."""
    token = secrets.token_urlsafe(16)
    api = settings.api.model_copy(
        update={"mqtt_username": "service.api", "mqtt_password": SecretStr(edge.passwords()["api"])}
    )
    own = quick_settings(settings) if live else settings
    own = own.model_copy(
        update={
            "api": api,
            "live": own.live.model_copy(update={"enabled": live}),
            "alerts": own.alerts.model_copy(update={"enabled": False}),
            "edge": EdgeSettings(
                broker="rabbitmq",
                amqp_url=",".join(f"amqp://127.0.0.1:{edge.amqp_port(i)}/" for i in edge.nodes),
                management_url=",".join(f"{edge.management_url(i)}/api" for i in edge.nodes),
                auth_token=SecretStr(token),
                auth_cache_ttl_s=AUTH_CACHE_TTL_MS / 1000,
            ),
        }
    )
    async with running_api(own) as url:
        auth_server.delegate = f"{url}/internal/broker/{token}"
        try:
            yield EdgeApi(url, edge, admin_headers)
        finally:
            auth_server.delegate = None


@pytest.fixture(scope="module")
async def edge_api(
    edge: RabbitCluster,
    auth_server: AuthServer,
    settings: Settings,
    admin_headers: dict[str, str],
) -> AsyncIterator[EdgeApi]:
    async with serving_edge_api(edge, auth_server, settings, admin_headers) as api:
        yield api
