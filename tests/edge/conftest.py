"""One real 3-node RabbitMQ cluster for the edge's tests, on free ports, with the HTTP auth
backend pointed at a logging server of the tests' own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_config import EdgeConfig, NodePorts
from stack.rabbitmq_topology import INGEST_QUEUE, wait_quorum_online
from stack.services import free_port
from tests.edge.authserver import AuthServer
from tests.edge.device import Device, DeviceFactory

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
