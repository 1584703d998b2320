"""The cluster forms with three nodes and the ingest queue is replicated on all of them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from stack.rabbitmq import RabbitCluster
from stack.rabbitmq_topology import INGEST_BINDINGS, INGEST_QUEUE, quorum_members
from tests.edge.device import poll


def test_three_running_nodes_by_the_cli_and_the_api(edge: RabbitCluster) -> None:
    status = json.loads(edge.ctl(2, "cluster_status", "--formatter", "json"))
    names = sorted(edge.node_name(i) for i in edge.nodes)
    assert sorted(status["running_nodes"]) == names
    assert sorted(status["disk_nodes"]) == names
    assert edge.running_nodes() == names


def test_nodes_register_with_the_clusters_own_epmd_only(edge: RabbitCluster) -> None:
    registered = _epmd_names(edge.epmd_port)
    assert {f"{edge.name_prefix}-{i}" for i in edge.nodes} <= registered
    assert not {f"{edge.name_prefix}-{i}" for i in edge.nodes} & _epmd_names(4369)


def _epmd_names(port: int) -> set[str]:
    out = subprocess.run(
        ["epmd", "-port", str(port), "-names"], capture_output=True, text=True, check=False
    ).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("name ")}


def test_ingest_queue_is_a_quorum_queue_with_three_online_members(
    edge: RabbitCluster, admin: httpx.Client
) -> None:
    queue = poll(
        lambda: admin.get(f"/queues/%2F/{INGEST_QUEUE}").json(),
        lambda q: "effective_policy_definition" in q,
    )
    assert queue["type"] == "quorum"
    assert queue["durable"] is True
    assert queue["arguments"]["x-queue-type"] == "quorum"
    assert queue["effective_policy_definition"] == {
        "max-length": edge.config.ingest_max_length,
        "overflow": "reject-publish",
    }
    state = quorum_members(admin, "/", INGEST_QUEUE)
    names = sorted(edge.node_name(i) for i in edge.nodes)
    assert sorted(state["members"]) == names
    assert sorted(state["online"]) == names
    assert state["leader"] in names
    bindings = admin.get(f"/queues/%2F/{INGEST_QUEUE}/bindings").json()
    assert sorted(b["routing_key"] for b in bindings if b["source"] == "amq.topic") == sorted(
        INGEST_BINDINGS
    )


def test_declaring_the_topology_again_changes_nothing(
    edge: RabbitCluster, admin: httpx.Client
) -> None:
    from stack.rabbitmq_topology import declare_topology

    before = admin.get(f"/queues/%2F/{INGEST_QUEUE}/bindings").json()
    declare_topology(admin, "/", edge.passwords(), len(edge.nodes), edge.config.ingest_max_length)
    assert admin.get(f"/queues/%2F/{INGEST_QUEUE}/bindings").json() == before
    assert sorted(quorum_members(admin, "/", INGEST_QUEUE)["online"]) == edge.running_nodes()


def _open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for {pid}")


def test_every_node_may_open_as_many_files_as_its_hard_limit(edge: RabbitCluster) -> None:
    """A descriptor per device connection: started through runuser a node had a soft limit of
    1,024 and refused devices beyond about a thousand."""
    for i in edge.nodes:
        pid = edge.node_pid(i)
        assert pid is not None
        soft, hard = _open_files_limits(pid)
        assert soft == hard, f"node {i}: soft {soft}, hard {hard}"
        # What RabbitMQ itself counts on (file_descriptors.total), not only the kernel's view.
        with edge.admin_client(i) as client:
            node = client.get(f"/nodes/{edge.node_name(i)}").json()
        assert node["fd_total"] == soft
