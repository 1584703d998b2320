"""What every benchmark needs: private services, processes whose peak memory is watched, fast
publishing, and percentiles."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key_at
from core.config import EdgeSettings, Settings
from core.mqtt import connect, make_client, publish_when_possible, wait_published
from migrations.runner import migrate
from stack.broker_auth import login_environment, with_identities
from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_config import EdgeConfig, NodePorts, memory_watermark
from stack.services import MosquittoBroker, PostgresCluster, free_port, remove_tree

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchServices:
    postgres: PostgresCluster
    broker: MosquittoBroker

    def settings(self) -> Settings:
        plain = Settings(
            environment="test",
            database_url=self.postgres.url,
            mqtt_url=self.broker.url,
            log_level="WARNING",
        )
        return with_identities(plain, self.broker.service_passwords())

    def reader_headers(self) -> dict[str, str]:
        """An API key's header for the benchmark's clients (a reader: they only read)."""
        return self.headers(Role.READER)

    def headers(self, role: Role) -> dict[str, str]:
        """A new API key of ``role``, as a request header."""
        body = ApiKeyCreate(name=f"bench-{role.value}", role=role)
        issued = asyncio.run(issue_key_at(self.postgres.url, body))
        return {"Authorization": f"Bearer {issued.token}"}


@contextmanager
def private_services() -> Iterator[BenchServices]:
    """A TimescaleDB and a Mosquitto of the benchmark's own, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="alatau-bench-"))
    folder.chmod(0o755)
    postgres = PostgresCluster(folder / "postgres", free_port())
    broker = MosquittoBroker(folder / "mosquitto", free_port())
    try:
        postgres.start()
        migrate(postgres.url)
        broker.start()
        yield BenchServices(postgres, broker)
    finally:
        broker.stop()
        postgres.stop(mode="immediate")
        remove_tree(folder)


# The city edge's allows are cached this long, as in ``make run-cluster``.
EDGE_AUTH_CACHE_TTL_MS = 15_000


@dataclass
class BenchEdge:
    """The city edge of a benchmark: a private 3-node RabbitMQ cluster on free ports whose
    device logins are answered by an api the benchmark starts on ``api_port``."""

    cluster: RabbitCluster
    token: str
    api_port: int

    def settings(self, database_url: str) -> Settings:
        """Every process's settings on this edge: devices spread over the nodes (MQTT 3.1.1),
        ingest on the quorum queue, the api answering logins."""
        cluster = self.cluster
        nodes = cluster.nodes
        plain = Settings(
            environment="test",
            database_url=database_url,
            mqtt_url=",".join(cluster.mqtt_url(i) for i in cluster.nodes),
            mqtt_protocol="3.1.1",
            log_level="WARNING",
            edge=EdgeSettings(
                broker="rabbitmq",
                amqp_url=",".join(
                    f"amqp://127.0.0.1:{cluster.amqp_port(i)}/" for i in cluster.nodes
                ),
                management_url=",".join(f"{cluster.management_url(i)}/api" for i in nodes),
                auth_token=SecretStr(self.token),
                auth_cache_ttl_s=EDGE_AUTH_CACHE_TTL_MS / 1000,
            ),
        )
        return with_identities(plain, cluster.passwords())

    def rss_mib(self) -> float:
        """The resident memory of the cluster's three Erlang VMs together."""
        return sum(rss_mib(self.cluster.node_pid(i)) for i in self.cluster.nodes)


@contextmanager
def private_edge(
    devices: int = 10_000,
    statistics_interval_ms: int = 1000,
    auth_cache_ttl_ms: int = EDGE_AUTH_CACHE_TTL_MS,
    auth_cache_module: str = "rabbit_auth_cache_ets",
) -> Iterator[BenchEdge]:
    """A city edge of the benchmark's own with room for ``devices``, stopped and removed
    afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="alatau-bench-edge-"))
    folder.chmod(0o755)
    token = uuid.uuid4().hex
    api_port = free_port()
    ports = [NodePorts(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    config = EdgeConfig(
        auth_url=f"http://127.0.0.1:{api_port}/internal/broker/{token}",
        auth_cache_ttl_ms=auth_cache_ttl_ms,
        auth_cache_module=auth_cache_module,
        memory_high_watermark=memory_watermark(devices, len(ports)),
        statistics_interval_ms=statistics_interval_ms,
    )
    cluster = RabbitCluster(
        folder / "rabbitmq", ports, epmd_port=free_port(), config=config, name_prefix="alatau-bench"
    )
    try:
        cluster.start()
        yield BenchEdge(cluster, token, api_port)
    finally:
        cluster.stop()
        remove_tree(folder)


def rss_mib(pid: int | None) -> float:
    """A process's resident memory now (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


class Process:
    """A child process (``python -m module``) whose peak resident memory is sampled. Its
    standard output is kept for ``output`` unless ``log`` names a file for it (a chatty
    process would fill the pipe and stall)."""

    def __init__(
        self, module: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self._log = log.open("ab") if log is not None else None
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            stdout=self._log or subprocess.PIPE,
            stderr=self._log,
            text=log is None,
            # Its own process group, so a stop that has to kill also ends the processes it
            # started (the simulator's workers outlived their killed parent).
            start_new_session=True,
        )
        self.peak_rss_mib = 0.0
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.popen.pid}/status")
        while self.popen.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_rss_mib = max(self.peak_rss_mib, int(line.split()[1]) / 1024)
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.2)

    def output(self, timeout_s: float = 300) -> str:
        stdout, _ = self.popen.communicate(timeout=timeout_s)
        return str(stdout or "")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if self._log is not None:
            self._log.close()


def login_url(settings: Settings, name: str) -> str:
    """``MQTT_URL`` with the login of process ``name`` in it, for tools that take one URL."""
    endpoint = settings.mqtt_as(getattr(settings, name))
    scheme = "mqtts" if endpoint.tls else "mqtt"
    if endpoint.username is None:
        return f"{scheme}://{endpoint.host}:{endpoint.port}"
    return (
        f"{scheme}://{quote(endpoint.username, safe='')}:{quote(endpoint.password or '', safe='')}"
        f"@{endpoint.host}:{endpoint.port}"
    )


def process_env(settings: Settings) -> dict[str, str]:
    """What a process we start needs to reach the benchmark's database and edge."""
    env = {
        "DATABASE_URL": settings.database_url,
        "MQTT_URL": settings.mqtt_url,
        "ALATAU_MQTT_PROTOCOL": settings.mqtt_protocol,
        **login_environment(settings),
        "ALATAU_LOG_LEVEL": "WARNING",
    }
    edge = settings.edge
    if edge.broker == "rabbitmq":
        env |= {
            "ALATAU_EDGE__BROKER": edge.broker,
            "ALATAU_EDGE__AMQP_URL": edge.amqp_url,
            "ALATAU_EDGE__MANAGEMENT_URL": edge.management_url,
            "ALATAU_EDGE__AUTH_CACHE_TTL_S": str(edge.auth_cache_ttl_s),
        }
        if edge.auth_token is not None:
            env["ALATAU_EDGE__AUTH_TOKEN"] = edge.auth_token.get_secret_value()
    return env


def ingest_env(settings: Settings, client_id: str, group: str | None = None) -> dict[str, str]:
    """Each measurement gets a share group of its own: Mosquitto keeps routing a group's share to
    the persistent sessions of stopped ingesters, so reusing a group would starve the next one.
    (On the city edge replicas compete for the one queue and the group means nothing.)"""
    return {
        **process_env(settings),
        "ALATAU_INGEST__CLIENT_ID": client_id,
        "ALATAU_INGEST__SHARE_GROUP": group or f"g-{client_id}",
    }


async def publish_all(
    settings: Settings, messages: Sequence[tuple[str, bytes]], publishers: int = 2
) -> float:
    """Publish at QoS 1 over several connections; returns seconds until the broker acked all."""

    async def one(chunk: Sequence[tuple[str, bytes]]) -> None:
        client = make_client(
            settings.mqtt_as(settings.simulator), f"bench-pub-{uuid.uuid4().hex[:8]}"
        )
        await connect(client, settings.mqtt_as(settings.simulator))
        try:
            for n, (topic, payload) in enumerate(chunk):
                await publish_when_possible(client, topic, payload)
                if n % 500 == 0:
                    await asyncio.sleep(0)
            await wait_published(client)
        finally:
            await client.disconnect()

    started = time.perf_counter()
    await asyncio.gather(*(one(messages[n::publishers]) for n in range(publishers)))
    return time.perf_counter() - started


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
