"""The city edge under docker compose (profile ``cluster``): three RabbitMQ containers.

``python -m stack.edge_compose config DIR`` writes the nodes' ``rabbitmq.conf`` and
``enabled_plugins`` into a volume they share (run once, before they start): MQTT and AMQP on the
usual ports, the cluster formed from ``rabbit@rabbit1..3``, services in the internal database
and devices' logins asked of the api at ``http://api:8000/internal/broker/{token}``.
``python -m stack.edge_compose topology`` then declares the services' users and the quorum
queue through the first node's management API. Values come from the environment (the same
variables the processes read), so compose's ``.env`` decides them once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

import httpx

from stack.rabbitmq_config import AUTH_PATHS, render_enabled_plugins
from stack.rabbitmq_topology import declare_topology

NODES: Final = ("rabbit@rabbit1", "rabbit@rabbit2", "rabbit@rabbit3")
ADMIN_USER: Final = "service.admin"


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"set {name}")
    return value


def render_conf(token: str, admin_password: str, cache_ttl_ms: int, api_url: str) -> str:
    auth = [f"auth_http.{p}_path = {api_url}/internal/broker/{token}/{p}" for p in AUTH_PATHS]
    return (
        "\n".join(
            [
                "# Written by python -m stack.edge_compose config; rewritten on every start.",
                "cluster_formation.peer_discovery_backend = classic_config",
                *[f"cluster_formation.classic_config.nodes.{n} = {node}" for n, node in
                  enumerate(NODES, start=1)],
                "auth_backends.1 = internal",
                "auth_backends.2 = cache",
                "auth_cache.cached_backend = http",
                f"auth_cache.cache_ttl = {cache_ttl_ms}",
                "auth_http.http_method = post",
                *auth,
                "mqtt.allow_anonymous = false",
                "mqtt.vhost = /",
                "mqtt.exchange = amq.topic",
                f"default_user = {ADMIN_USER}",
                f"default_pass = {admin_password}",
                "default_user_tags.administrator = true",
                "loopback_users = none",
                "collect_statistics_interval = 1000",
            ]
        )
        + "\n"
    )  # fmt: skip


def write_config(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    ttl_s = float(os.environ.get("ALATAU_EDGE__AUTH_CACHE_TTL_S", "15"))
    conf = render_conf(
        _need("ALATAU_EDGE__AUTH_TOKEN"),
        _need("ALATAU_EDGE_ADMIN_PASSWORD"),
        int(ttl_s * 1000),
        os.environ.get("ALATAU_EDGE_API_URL", "http://api:8000"),
    )
    (directory / "rabbitmq.conf").write_text(conf)
    (directory / "enabled_plugins").write_text(render_enabled_plugins())


def declare(management_url: str) -> None:
    passwords = {
        s: _need(f"ALATAU_{s.upper()}__MQTT_PASSWORD") for s in ("ingest", "api", "simulator")
    }
    with httpx.Client(
        base_url=management_url, auth=(ADMIN_USER, _need("ALATAU_EDGE_ADMIN_PASSWORD")), timeout=30
    ) as client:
        declare_topology(client, "/", passwords, len(NODES))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "config":
        write_config(Path(sys.argv[2]))
    elif len(sys.argv) in {2, 3} and sys.argv[1] == "topology":
        declare(sys.argv[2] if len(sys.argv) == 3 else "http://rabbit1:15672/api")
    else:
        sys.exit("usage: python -m stack.edge_compose config DIR | topology [MANAGEMENT_URL]")


if __name__ == "__main__":
    main()
