"""``make run``: the whole stack with a simulated city, until Ctrl-C.

With no configuration it starts a private TimescaleDB and Mosquitto under ``.data/``; with
``DATABASE_URL`` / ``MQTT_URL`` set it uses those services instead. ``--standby`` adds a hot
standby of the private TimescaleDB (port 55433), from which the api reads. ``--edge cluster``
(``make run-cluster``) puts the city edge in Mosquitto's place: a private 3-node RabbitMQ
cluster whose device logins the api answers. A process that exits is restarted with backoff
(stack/supervisor.py). It stops only what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

import httpx

from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import KeyChecker, issue_key_at
from core.config import Settings, get_settings
from core.db import create_pool
from core.logging import configure_logging
from migrations.runner import migrate
from stack.broker_auth import login_environment, with_identities
from stack.rabbitmq import RabbitCluster, fixed_ports, local_edge
from stack.rabbitmq_config import EdgeConfig, memory_watermark
from stack.services import (
    MosquittoBroker,
    PostgresCluster,
    ServiceError,
    StandbyCluster,
    port_open,
)
from stack.supervisor import StopSignals, Supervisor
from stack.tls import make_certificates

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("ALATAU_DATA_DIR", ROOT / ".data"))
LOCAL_PG_PORT = 55432
LOCAL_STANDBY_PORT = 55433
STANDBY_DIR = DATA_DIR / "postgres-standby"
LOCAL_MQTT_PORT = 18830
LOCAL_MQTTS_PORT = 18883
DEV_KEY_PATH = DATA_DIR / "dev-admin-key"


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


EDGE_DIR = DATA_DIR / "rabbitmq"
EDGE_TOKEN_PATH = EDGE_DIR / "auth-token"
EDGE_CACHE_TTL_MS = 15_000


def local_edge_cluster(api_url: str, devices: int = 0) -> RabbitCluster:
    """The private city edge: its login checks go to the api's internal endpoints, behind a
    token made once and kept beside the cluster's data; each node's memory limit has room for
    its share of ``devices``."""
    EDGE_DIR.mkdir(parents=True, exist_ok=True)
    if not EDGE_TOKEN_PATH.exists():
        EDGE_TOKEN_PATH.write_text(secrets.token_urlsafe(24) + "\n")
        EDGE_TOKEN_PATH.chmod(0o600)
    token = EDGE_TOKEN_PATH.read_text().strip()
    config = EdgeConfig(
        auth_url=f"{api_url}/internal/broker/{token}",
        auth_cache_ttl_ms=EDGE_CACHE_TTL_MS,
        memory_high_watermark=memory_watermark(devices, len(fixed_ports())),
    )
    return local_edge(EDGE_DIR, config)


def edge_environment(cluster: RabbitCluster) -> dict[str, str]:
    """What every process needs to use the city edge (core/config.py names)."""
    passwords = cluster.passwords()
    token = EDGE_TOKEN_PATH.read_text().strip()
    env = {
        "ALATAU_EDGE__BROKER": "rabbitmq",
        "ALATAU_EDGE__AUTH_TOKEN": token,
        "ALATAU_EDGE__AUTH_CACHE_TTL_S": str(EDGE_CACHE_TTL_MS / 1000),
        "ALATAU_EDGE__AMQP_URL": ",".join(
            f"amqp://127.0.0.1:{cluster.amqp_port(i)}/" for i in cluster.nodes
        ),
        "ALATAU_EDGE__MANAGEMENT_URL": ",".join(
            f"{cluster.management_url(i)}/api" for i in cluster.nodes
        ),
        "MQTT_URL": ",".join(cluster.mqtt_url(i) for i in cluster.nodes),
        "ALATAU_MQTT_PROTOCOL": "3.1.1",
    }
    for service in ("ingest", "api", "simulator"):
        env[f"ALATAU_{service.upper()}__MQTT_USERNAME"] = f"service.{service}"
        env[f"ALATAU_{service.upper()}__MQTT_PASSWORD"] = passwords[service]
    return env


def local_services() -> tuple[PostgresCluster, MosquittoBroker]:
    return (
        PostgresCluster(DATA_DIR / "postgres", LOCAL_PG_PORT),
        MosquittoBroker(
            DATA_DIR / "mosquitto",
            LOCAL_MQTT_PORT,
            tls_port=LOCAL_MQTTS_PORT,
            tls_dir=make_certificates(DATA_DIR / "tls"),
        ),
    )


class Stack:
    """Starts services and processes in order, keeps the processes running, and stops
    everything in reverse."""

    def __init__(
        self, devices_per_kind: int, rate_hz: float, edge: str, api_url: str, standby: bool = False
    ) -> None:
        self.devices_per_kind = devices_per_kind
        self.rate_hz = rate_hz
        self.edge = edge
        self.api_url = api_url
        self.standby = standby
        self.started_services: list[PostgresCluster | MosquittoBroker | RabbitCluster] = []
        self.env = dict(os.environ)
        # Filled in as services start; each child gets it as it stands when it (re)starts.
        self.supervisor = Supervisor(env=self.env, cwd=ROOT)

    def start_services(self) -> None:
        postgres, broker = local_services()
        private = self._use_or_start(postgres, "DATABASE_URL", "TimescaleDB", "database")
        if self.standby:
            if not private:
                raise ServiceError(
                    "--standby replicates the private TimescaleDB; with"
                    " DATABASE_URL set, set DATABASE_READ_URL to its replica"
                )
            self.start_standby(StandbyCluster(STANDBY_DIR, LOCAL_STANDBY_PORT, primary=postgres))
        if self.edge == "cluster":
            self._start_cluster()
            return
        if self._use_or_start(broker, "MQTT_URL", "Mosquitto", "broker"):
            # Our own broker: each process gets its own login (anonymous access is off).
            self.env.update(
                login_environment(with_identities(get_settings(), broker.service_passwords()))
            )
            say(f"Mosquitto TLS listener for devices: {broker.tls_url} (CA: {DATA_DIR}/tls/ca.crt)")
            # What registration answers tell devices (the certificate names localhost).
            self.env.setdefault("ALATAU_DEVICE_CONNECT__HOST", "localhost")
            self.env.setdefault("ALATAU_DEVICE_CONNECT__MQTTS_PORT", str(LOCAL_MQTTS_PORT))
            self.env.setdefault("ALATAU_DEVICE_CONNECT__CA_FILE", str(DATA_DIR / "tls" / "ca.crt"))

    def start_standby(self, standby: StandbyCluster) -> None:
        """A hot standby of the primary just started; the api's lag-tolerant reads go to it."""
        was_running = standby.running()
        standby.start()
        if not was_running:
            self.started_services.append(standby)
        self.env["DATABASE_READ_URL"] = standby.url
        say(f"hot standby {'reused' if was_running else 'started'} on port {standby.port}")

    def _start_cluster(self) -> None:
        cluster = local_edge_cluster(self.api_url, self.devices_per_kind * 3)
        was_running = cluster.running()
        if not was_running:
            say("starting the city edge: 3 RabbitMQ nodes (a minute the first time)")
        cluster.start()
        if not was_running:
            self.started_services.append(cluster)
        self.env.update(edge_environment(cluster))
        nodes = ", ".join(cluster.mqtt_url(i) for i in cluster.nodes)
        say(f"city edge {'reused' if was_running else 'started'}: MQTT 3.1.1 on {nodes}")

    def _use_or_start(
        self, service: PostgresCluster | MosquittoBroker, variable: str, name: str, role: str
    ) -> bool:
        """Use the service the environment names, or start (or reuse) the private one; True
        for the private one."""
        if variable in os.environ or f"ALATAU_{variable}" in os.environ:
            say(f"using the {role} at {variable}")
            # The same precedence as core.config.Settings: the prefixed name wins.
            self.env[variable] = os.environ.get(f"ALATAU_{variable}") or os.environ[variable]
            return False
        was_running = service.running()
        service.start()
        if not was_running:
            self.started_services.append(service)
        say(f"{name} {'reused' if was_running else 'started'} on port {service.port}")
        self.env[variable] = service.url
        return True

    def migrate(self) -> None:
        applied = migrate(self.env["DATABASE_URL"])
        say(f"database migrated ({len(applied)} new migrations)")

    def dev_admin_key(self) -> str:
        """A development admin key, kept in ``.data/`` so every ``make run`` prints the same
        one (a new one if it was revoked); the simulator registers its devices with it."""
        known = DEV_KEY_PATH.read_text().strip() if DEV_KEY_PATH.exists() else None
        token = asyncio.run(_valid_or_new_admin_key(self.env["DATABASE_URL"], known))
        if token != known:
            DEV_KEY_PATH.parent.mkdir(parents=True, exist_ok=True)
            DEV_KEY_PATH.write_text(token + "\n")
            DEV_KEY_PATH.chmod(0o600)
        self.env["ALATAU_SIMULATOR_API_KEY"] = token
        return token

    def spawn(self, name: str, *args: str) -> None:
        self.supervisor.start(name, [sys.executable, "-m", *args])

    def start_processes(self, api_url: str) -> None:
        self.spawn("ingest", "ingest")
        self.spawn("rollups", "rollups")
        self.spawn("api", "api")
        wait_for_api(api_url, self.supervisor)
        # The api on another port (ALATAU_API__PORT): the simulator registers there too.
        self.env.setdefault("ALATAU_SIMULATOR__API_URL", api_url)
        self.spawn(
            "simulator",
            "simulators",
            "run",
            "--devices-per-kind",
            str(self.devices_per_kind),
            "--rate",
            str(self.rate_hz),
        )

    def stop(self) -> None:
        self.supervisor.stop()
        for service in reversed(self.started_services):
            service.stop()
            say(f"stopped {type(service).__name__}")
        self.started_services.clear()


async def _valid_or_new_admin_key(database_url: str, known: str | None) -> str:
    if known is not None:
        pool = await create_pool(Settings(database_url=database_url), "make-run")
        try:
            if await KeyChecker(pool).check(known) is not None:
                return known
        finally:
            await pool.close()
    body = ApiKeyCreate(name="make-run development admin", role=Role.ADMIN)
    return (await issue_key_at(database_url, body)).token


def wait_for_api(api_url: str, supervisor: Supervisor, timeout_s: float = 60) -> None:
    """Wait for the api's health answer; children that exit meanwhile are restarted."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.poll()
        try:
            if httpx.get(f"{api_url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServiceError(f"the api did not answer at {api_url} within {timeout_s:.0f}s")


def stop_local_services(api_url: str) -> None:
    postgres, broker = local_services()
    services: list[PostgresCluster | MosquittoBroker | RabbitCluster] = [postgres, broker]
    if STANDBY_DIR.exists():
        services.insert(1, StandbyCluster(STANDBY_DIR, LOCAL_STANDBY_PORT, primary=postgres))
    if EDGE_TOKEN_PATH.exists():
        services.append(local_edge_cluster(api_url))
    for service in reversed(services):
        service.stop()
    say("local TimescaleDB, Mosquitto and city edge stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices-per-kind", type=int, default=70)
    parser.add_argument("--rate", type=float, default=1.0, help="readings per device per second")
    parser.add_argument("--stop", action="store_true", help="stop leftover local services")
    parser.add_argument(
        "--edge",
        choices=["mosquitto", "cluster"],
        default="mosquitto",
        help="the broker devices reach: one Mosquitto, or a local 3-node RabbitMQ cluster",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="also a hot standby of the private TimescaleDB; the api reads from it",
    )
    args = parser.parse_args()
    settings = get_settings()
    api_url = f"http://{settings.api.host}:{settings.api.port}"
    if args.stop:
        stop_local_services(api_url)
        return

    configure_logging(settings.log_level, settings.log_format, process="run")
    if port_open(settings.api.port, settings.api.host):
        sys.exit(f"port {settings.api.port} is taken; set ALATAU_API__PORT to another one")
    stack = Stack(args.devices_per_kind, args.rate, args.edge, api_url, standby=args.standby)
    stop = StopSignals()
    try:
        stack.start_services()
        stack.migrate()
        key = stack.dev_admin_key()
        stack.start_processes(api_url)
        say(f"API:       {api_url}/api/v1  (OpenAPI: {api_url}/docs)")
        say(f"Console:   {api_url}/#key={key}")
        say(f"development admin API key (Authorization: Bearer ...): {key}")
        say(f"simulated city: {args.devices_per_kind * 3} devices; Ctrl-C stops everything")
        stack.supervisor.run_until(lambda: stop.requested)
    except ServiceError as exc:
        say(f"error: {exc}")
        raise SystemExit(1) from exc
    finally:
        say("stopping")
        stack.stop()


if __name__ == "__main__":
    main()
