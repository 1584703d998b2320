"""The answers to the city edge broker's login and permission questions, from the registry.

RabbitMQ's HTTP auth backend (behind its cache, which keeps allows for a few seconds and never
denials) asks four things. Service users (their names hold a dot, device ids cannot) are always
denied here, so the broker falls through to its own user database for them. A device may log in
with its id as username and client id and its current secret while it is enabled, publish only
under ``alatau/{its kind}/{its id}/``, and read only its own ``.../errors`` topic. Every topic the
broker refuses a device is kept as a ``topic_denied`` rejection, so an operator sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import asyncpg
import structlog

from devices import service as registry
from devices.contract import TOPIC_ROOT, Kind, utc_now
from devices.credentials import secret_matches
from ingest import repository as ingest_repository
from ingest.schemas import Reason, Rejection

log = structlog.get_logger(__name__)

ALLOW: Final = "allow"
DENY: Final = "deny"
TOPIC_EXCHANGE: Final = "amq.topic"
# A device refused again and again (it reconnects and retries) is recorded once in a while.
REFUSAL_RECORD_INTERVAL_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Login:
    device_id: str
    kind: Kind


def _is_device(username: str) -> bool:
    return "." not in username


async def _login(pool: asyncpg.Pool, username: str) -> tuple[Login, bytes] | None:
    """The enabled device ``username`` with its secret digest, or None."""
    if not _is_device(username):
        return None
    async with pool.acquire() as conn:
        row = await registry.broker_login(conn, username)
    if row is None or not row["enabled"]:
        return None
    return Login(username, Kind(row["kind"])), bytes(row["secret_hash"])


async def check_user(pool: asyncpg.Pool, username: str, password: str, client_id: str) -> str:
    found = await _login(pool, username)
    if found is None or client_id != username or not secret_matches(password, found[1]):
        return DENY
    return ALLOW


async def check_vhost(pool: asyncpg.Pool, vhost_wanted: str, vhost: str, username: str) -> str:
    return ALLOW if vhost == vhost_wanted and await _login(pool, username) else DENY


def _resource_allowed(username: str, resource: str, name: str, permission: str) -> bool:
    if resource == "exchange":
        # Publishing writes to the topic exchange; subscribing binds a queue to it (read).
        return name == TOPIC_EXCHANGE and permission in {"write", "read"}
    if resource == "queue":
        # The MQTT plugin's queue of this client's subscriptions (client id = device id).
        return name in {f"mqtt-subscription-{username}qos0", f"mqtt-subscription-{username}qos1"}
    return False


async def check_resource(
    pool: asyncpg.Pool, username: str, resource: str, name: str, permission: str
) -> str:
    if not _resource_allowed(username, resource, name, permission):
        return DENY
    return ALLOW if await _login(pool, username) else DENY


class TopicRefusals:
    """Topic refusals kept as rejections, at most one per device and topic every few seconds."""

    def __init__(self) -> None:
        self._recorded_at: dict[tuple[str, str], float] = {}

    def due(self, device_id: str, topic: str) -> bool:
        now = time.monotonic()
        key = (device_id, topic)
        if now - self._recorded_at.get(key, float("-inf")) < REFUSAL_RECORD_INTERVAL_S:
            return False
        if len(self._recorded_at) > 100_000:
            self._recorded_at.clear()
        self._recorded_at[key] = now
        return True


async def check_topic(
    pool: asyncpg.Pool,
    refusals: TopicRefusals,
    *,
    username: str,
    name: str,
    permission: str,
    routing_key: str,
) -> str:
    found = await _login(pool, username)
    if found is None or name != TOPIC_EXCHANGE:
        return DENY
    login = found[0]
    own = f"{TOPIC_ROOT}.{login.kind.value}.{login.device_id}."
    if permission == "write" and routing_key.startswith(own) and len(routing_key) > len(own):
        return ALLOW
    if permission == "read" and routing_key == own + "errors":
        return ALLOW
    topic = routing_key.replace(".", "/")
    log.warning(
        "broker refused a device's topic", device_id=username, topic=topic, action=permission
    )
    if refusals.due(username, topic):
        await _record_refusal(pool, login, topic, permission)
    return DENY


async def _record_refusal(pool: asyncpg.Pool, login: Login, topic: str, permission: str) -> None:
    action = "publish on" if permission == "write" else "subscribe to"
    rejection = Rejection(
        utc_now(),
        topic,
        login.kind.value,
        login.device_id,
        Reason.TOPIC_DENIED,
        f"the broker refused {login.device_id!r} to {action} {topic!r}: a device may publish"
        f" only under {TOPIC_ROOT}/{login.kind.value}/{login.device_id}/ and read only its"
        " errors topic",
        b"",
    )
    async with pool.acquire() as conn:
        await ingest_repository.store_rejections(conn, [rejection.record()])
