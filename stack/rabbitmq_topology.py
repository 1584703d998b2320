"""The edge's users, permissions, queue, policy and bindings, declared through the management
HTTP API on every start (each call is idempotent, so a restart re-asserts them).

Service usernames contain a dot, which device ids cannot, so the two never collide; devices are
not in this database at all (the HTTP auth backend answers for them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from stack.services import ServiceError

ADMIN: Final = "admin"
INGEST_QUEUE: Final = "alatau.ingest"
INGEST_POLICY: Final = "alatau-ingest-limits"
# MQTT topics become routing keys with "/" replaced by ".". Everything under the root, so a
# topic no part of the contract defines reaches ingest and is refused as invalid_topic instead
# of vanishing (a publish that matches no queue is PUBACKed anyway); ingest skips its own
# rejection echoes (alatau.{kind}.{id}.errors). A routing key matching several bindings is
# queued once. The earlier telemetry and status bindings may stay: they add nothing.
INGEST_BINDINGS: Final = ("alatau.#",)
TOPIC_EXCHANGE: Final = "amq.topic"
NOTHING: Final = "^$"


@dataclass(frozen=True)
class ServiceGrant:
    """A service's tags, vhost permissions (regexes) and topic permissions on amq.topic."""

    tags: str
    configure: str
    write: str
    read: str
    topic_write: str = NOTHING
    topic_read: str = NOTHING


SERVICE_GRANTS: Final[dict[str, ServiceGrant]] = {
    # Consumes the ingest queue (a passive declare needs no permission) and publishes each
    # device's rejection echoes on alatau.{kind}.{id}.errors.
    "ingest": ServiceGrant(
        tags="",
        configure=NOTHING,
        write=r"^amq\.topic$",
        read=r"^alatau\.ingest$",
        topic_write=r"^alatau\.[^.]+\.[^.]+\.errors$",
    ),
    # Its live feeds bind queues of its own to amq.topic; it reads queue depths and closes a
    # disabled device's connections, and 3.10's management API lets only the administrator
    # tag close another user's connections (monitoring may only list them).
    "api": ServiceGrant(
        tags="administrator",
        configure=r"^alatau\.live\..*",
        write=r"^alatau\.live\..*",
        read=r"^(amq\.topic|alatau\.live\..*)$",
        topic_read=r"^alatau\..*",
    ),
    # Development only: publishes for many simulated devices over MQTT.
    "simulator": ServiceGrant(
        tags="",
        configure=NOTHING,
        write=r"^amq\.topic$",
        read=NOTHING,
        topic_write=r"^alatau\..*",
    ),
}


def _q(name: str) -> str:
    return quote(name, safe="")


def _ok(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 300:
        raise ServiceError(f"{what}: HTTP {response.status_code} {response.text}")
    return response


def declare_users(client: httpx.Client, vhost: str, passwords: dict[str, str]) -> None:
    """The services' users with exactly their grants (passwords from the data folder)."""
    for service, grant in SERVICE_GRANTS.items():
        user = f"service.{service}"
        _ok(
            client.put(
                f"/users/{_q(user)}", json={"password": passwords[service], "tags": grant.tags}
            ),
            f"user {user}",
        )
        permissions = {"configure": grant.configure, "write": grant.write, "read": grant.read}
        _ok(client.put(f"/permissions/{_q(vhost)}/{_q(user)}", json=permissions), f"{user} perms")
        topic = {"exchange": TOPIC_EXCHANGE, "write": grant.topic_write, "read": grant.topic_read}
        _ok(client.put(f"/topic-permissions/{_q(vhost)}/{_q(user)}", json=topic), f"{user} topics")


def ingest_queue_arguments(nodes: int) -> dict[str, Any]:
    return {"x-queue-type": "quorum", "x-quorum-initial-group-size": nodes}


def declare_ingest_queue(client: httpx.Client, vhost: str, nodes: int, max_length: int) -> None:
    """The quorum queue on every node, its length limit (a policy, so it can change without
    re-declaring) and its bindings from amq.topic."""
    policy = {
        "pattern": rf"^{INGEST_QUEUE.replace('.', chr(92) + '.')}$",
        "apply-to": "queues",
        "priority": 0,
        # Full: publishes are refused (an MQTT device gets no PUBACK), never old readings dropped.
        "definition": {"max-length": max_length, "overflow": "reject-publish"},
    }
    _ok(client.put(f"/policies/{_q(vhost)}/{INGEST_POLICY}", json=policy), "ingest policy")
    body = {"durable": True, "auto_delete": False, "arguments": ingest_queue_arguments(nodes)}
    _ok(client.put(f"/queues/{_q(vhost)}/{INGEST_QUEUE}", json=body), "ingest queue")
    for routing_key in INGEST_BINDINGS:
        _ok(
            client.post(
                f"/bindings/{_q(vhost)}/e/{_q(TOPIC_EXCHANGE)}/q/{INGEST_QUEUE}",
                json={"routing_key": routing_key},
            ),
            f"binding {routing_key}",
        )


def quorum_members(client: httpx.Client, vhost: str, queue: str) -> dict[str, Any]:
    """A quorum queue's ``members``, ``online`` members and ``leader`` as the API reports."""
    response = _ok(client.get(f"/queues/{_q(vhost)}/{_q(queue)}"), f"queue {queue}")
    body: dict[str, Any] = response.json()
    return {key: body.get(key) for key in ("members", "online", "leader", "messages")}


def wait_quorum_online(
    client: httpx.Client, vhost: str, queue: str, nodes: int, timeout_s: float = 60
) -> dict[str, Any]:
    """Until ``nodes`` members of ``queue`` are online."""
    deadline = time.monotonic() + timeout_s
    state = quorum_members(client, vhost, queue)
    while len(state["online"] or []) < nodes:
        if time.monotonic() > deadline:
            raise ServiceError(f"{queue} has only {state} after {timeout_s:.0f}s")
        time.sleep(0.1)
        state = quorum_members(client, vhost, queue)
    return state


def declare_topology(
    client: httpx.Client,
    vhost: str,
    passwords: dict[str, str],
    nodes: int,
    max_length: int = 1_000_000,
) -> None:
    """Everything the edge needs, on a running cluster of ``nodes`` nodes."""
    declare_users(client, vhost, passwords)
    declare_ingest_queue(client, vhost, nodes, max_length)
    wait_quorum_online(client, vhost, INGEST_QUEUE, nodes)
