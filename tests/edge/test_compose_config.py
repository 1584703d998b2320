"""The compose profile's edge helpers: the nodes' config names the api's login checks, and the
topology step declares the services and the queue on a running cluster (idempotently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import edge_compose
from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_topology import INGEST_QUEUE, quorum_members


def test_the_config_points_every_login_check_at_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALATAU_EDGE__AUTH_TOKEN", "tok3n")
    monkeypatch.setenv("ALATAU_EDGE_ADMIN_PASSWORD", "adm1n")
    edge_compose.write_config(tmp_path)
    conf = (tmp_path / "rabbitmq.conf").read_text()
    for path in ("user", "vhost", "resource", "topic"):
        assert f"auth_http.{path}_path = http://api:8000/internal/broker/tok3n/{path}" in conf
    assert "cluster_formation.classic_config.nodes.3 = rabbit@rabbit3" in conf
    assert (tmp_path / "enabled_plugins").read_text().startswith("[rabbitmq_mqtt,")


def test_the_topology_step_declares_on_a_running_cluster(
    edge: RabbitCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwords = edge.passwords()
    monkeypatch.setenv("ALATAU_EDGE_ADMIN_PASSWORD", passwords["admin"])
    for service in ("ingest", "api", "simulator"):
        monkeypatch.setenv(f"ALATAU_{service.upper()}__MQTT_PASSWORD", passwords[service])
    edge_compose.declare(f"{edge.management_url(2)}/api")
    with edge.admin_client() as client:
        assert len(quorum_members(client, "/", INGEST_QUEUE)["online"]) == len(edge.nodes)
