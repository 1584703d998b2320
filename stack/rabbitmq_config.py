"""What each node of the private RabbitMQ edge is told: its environment, rabbitmq.conf, plugins.

Every value a node could take from the machine is given explicitly, because this machine runs
its own RabbitMQ: ``/etc/rabbitmq/rabbitmq-env.conf`` names a node and the default ports,
cookie and epmd belong to that service.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PLUGINS = (
    "rabbitmq_mqtt",
    "rabbitmq_management",
    "rabbitmq_auth_backend_http",
    "rabbitmq_auth_backend_cache",
)

AUTH_PATHS = ("user", "vhost", "resource", "topic")

# A node's memory besides its connections, and what each MQTT connection adds on RabbitMQ
# 3.10's plugin: about 0.47 MiB measured with 10,000 simulated devices (docs/benchmarks.md).
NODE_BASE_MIB = 1024
MIB_PER_MQTT_CONNECTION = 0.6


def memory_watermark(devices: int, nodes: int) -> str:
    """A node's absolute memory limit with room for its share of ``devices``: below it the
    node raises a memory alarm and blocks every publisher of the cluster."""
    share = -(-devices // nodes)
    return f"{NODE_BASE_MIB + round(share * MIB_PER_MQTT_CONNECTION)}MiB"


@dataclass(frozen=True)
class NodePorts:
    """The ports one node listens on, all on 127.0.0.1."""

    amqp: int
    mqtt: int
    management: int
    dist: int


@dataclass(frozen=True)
class EdgeConfig:
    """What the caller decides about the edge; the rest is fixed in ``render_rabbitmq_conf``.

    ``auth_url`` is the base of the HTTP auth backend's four endpoints: the broker asks
    ``{auth_url}/user``, ``/vhost``, ``/resource`` and ``/topic``."""

    auth_url: str
    auth_http_method: Literal["get", "post"] = "post"
    # Allows are kept this long by the cache backend; refusals are never kept (cache_refusals
    # stays false) so a device whose login was just issued is let in on its next attempt.
    auth_cache_ttl_ms: int = 15_000
    # rabbit_auth_cache_ets answers every look-up through one process per node: with thousands
    # of devices publishing (each publish asks it, the backend's allows can expire) its calls
    # time out and the channels crash (docs/benchmarks.md, the fleet run). The others RabbitMQ
    # 3.10 ships are untried here; rabbit_auth_cache_ets_segmented_stateless refused every login.
    auth_cache_module: str = "rabbit_auth_cache_ets"
    # How long a node waits for the auth backend: a timeout is a refused login (CONNACK 0x4),
    # so it allows for an api that is busy with a fleet coming up, not just a quiet one.
    auth_request_timeout_ms: int = 15_000
    auth_connection_timeout_ms: int = 5_000
    vhost: str = "/"
    # A shared machine: absolute limits, not fractions of all its RAM.
    memory_high_watermark: str = "1GiB"
    disk_free_limit: str = "1GB"
    # Unacknowledged deliveries per MQTT subscriber (devices only publish; kept small).
    mqtt_prefetch: int = 10
    # A persistent MQTT session's queue is deleted this long after its client left.
    mqtt_subscription_ttl_ms: int = 86_400_000
    # Readings the ingest queue holds before it refuses publishes (devices then get no PUBACK).
    ingest_max_length: int = 1_000_000
    raft_wal_max_size_bytes: int = 64 * 1024 * 1024
    # How often every connection, channel and queue reports its figures to the management
    # API: at a second, 10,000 device connections keep the nodes busy and the API slow.
    statistics_interval_ms: int = 1000
    log_level: str = "info"


def render_rabbitmq_conf(
    config: EdgeConfig,
    ports: NodePorts,
    *,
    admin_username: str,
    admin_password: str,
    log_dir: Path,
    seed_node: str | None = None,
) -> str:
    """The node's rabbitmq.conf (new-style, sysctl format).

    A blank node with a ``seed_node`` joins that node's cluster while it boots (config-file
    peer discovery, retried until the seed's database is up), so all nodes boot at once."""
    auth = [f"auth_http.{path}_path = {config.auth_url.rstrip('/')}/{path}" for path in AUTH_PATHS]
    lines = [
        "# Written by stack/rabbitmq_config.py; edits are overwritten on start.",
        f"listeners.tcp.1 = 127.0.0.1:{ports.amqp}",
        f"mqtt.listeners.tcp.1 = 127.0.0.1:{ports.mqtt}",
        "management.tcp.ip = 127.0.0.1",
        f"management.tcp.port = {ports.management}",
        # The services' logins live in the internal database, asked first: the other way
        # round every service login and every management API request would send that
        # service's password to the HTTP endpoint (refusals are not cached). Devices are not
        # in it, so theirs fall through to the registry over HTTP, behind a cache.
        "auth_backends.1 = internal",
        "auth_backends.2 = cache",
        "auth_cache.cached_backend = http",
        f"auth_cache.cache_ttl = {config.auth_cache_ttl_ms}",
        f"auth_cache.cache_module = {config.auth_cache_module}",
        "auth_cache.cache_refusals = false",
        f"auth_http.http_method = {config.auth_http_method}",
        *auth,
        f"auth_http.request_timeout = {config.auth_request_timeout_ms}",
        f"auth_http.connection_timeout = {config.auth_connection_timeout_ms}",
        "mqtt.allow_anonymous = false",
        f"mqtt.vhost = {config.vhost}",
        "mqtt.exchange = amq.topic",
        f"mqtt.subscription_ttl = {config.mqtt_subscription_ttl_ms}",
        f"mqtt.prefetch = {config.mqtt_prefetch}",
        # The administrator the stack declares topology with, created on a blank cluster only.
        f"default_user = {admin_username}",
        f"default_pass = {admin_password}",
        "default_user_tags.administrator = true",
        "default_permissions.configure = .*",
        "default_permissions.read = .*",
        "default_permissions.write = .*",
        f"default_vhost = {config.vhost}",
        # Everything listens on loopback only; the services log in from there.
        "loopback_users = none",
        f"vm_memory_high_watermark.absolute = {config.memory_high_watermark}",
        f"disk_free_limit.absolute = {config.disk_free_limit}",
        f"raft.wal_max_size_bytes = {config.raft_wal_max_size_bytes}",
        # Queue depth and node memory in the management API are at most this old.
        f"collect_statistics_interval = {config.statistics_interval_ms}",
        "management.rates_mode = none",
        f"log.dir = {log_dir}",
        "log.file = node.log",
        f"log.file.level = {config.log_level}",
        "log.console = false",
    ]
    if seed_node is not None:
        lines += [
            "cluster_formation.peer_discovery_backend = classic_config",
            f"cluster_formation.classic_config.nodes.1 = {seed_node}",
            # Wait up to a minute for the seed rather than boot alone.
            "cluster_formation.discovery_retry_limit = 240",
            "cluster_formation.discovery_retry_interval = 250",
        ]
    return "\n".join(lines) + "\n"


def render_enabled_plugins() -> str:
    """The enabled-plugins file: an Erlang list term."""
    return "[" + ",".join(PLUGINS) + "].\n"


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps everything of its own."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def cookie(self) -> Path:
        return self.home / ".erlang.cookie"

    @property
    def env_file(self) -> Path:
        return self.root / "rabbitmq-env.conf"

    @property
    def config_file(self) -> Path:
        return self.root / "rabbitmq.conf"

    @property
    def plugins_file(self) -> Path:
        return self.root / "enabled_plugins"

    @property
    def mnesia(self) -> Path:
        return self.root / "mnesia"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def pid_file(self) -> Path:
        return self.root / "rabbitmq.pid"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"


def node_environment(
    node_name: str, paths: NodePaths, ports: NodePorts, epmd_port: int
) -> dict[str, str]:
    """The variables the server scripts and the CLI tools read, all pointing at our own files.

    ``RABBITMQ_CONF_ENV_FILE`` names our own (empty) file so the machine's, which sets another
    node name, is never sourced."""
    return {
        "HOME": str(paths.home),
        "RABBITMQ_NODENAME": node_name,
        "RABBITMQ_CONF_ENV_FILE": str(paths.env_file),
        "RABBITMQ_CONFIG_FILE": str(paths.config_file),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(paths.plugins_file),
        "RABBITMQ_MNESIA_BASE": str(paths.mnesia),
        "RABBITMQ_MNESIA_DIR": str(paths.mnesia / node_name),
        "RABBITMQ_LOG_BASE": str(paths.logs),
        "RABBITMQ_PID_FILE": str(paths.pid_file),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(ports.amqp),
        "RABBITMQ_DIST_PORT": str(ports.dist),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # The CLI tools' own distribution port: any free one, not the service's fixed range.
        "RABBITMQ_CTL_DIST_PORT_MIN": "0",
        "RABBITMQ_CTL_DIST_PORT_MAX": "0",
        # Three VMs share two cores with other work: leave scheduling to the kernel.
        "RABBITMQ_SCHEDULER_BIND_TYPE": "u",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "PATH": "/usr/lib/rabbitmq/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
