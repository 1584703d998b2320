"""Broker logins of devices: where they live on each edge, and the Mosquitto commands for them.

Every device logs in with its id as username and a random secret shown once; the registry keeps
only its SHA-256 (``device_credentials``). On the city edge (RabbitMQ) that is all there is: the
broker asks the api. On Mosquitto the dynamic-security plugin keeps its own hashed copy, and each
device has a role of its own whose one ACL lets it publish on ``alatau/{kind}/{id}/#`` and
nowhere else (Mosquitto 2.0's plugin has no ``%u`` substitution, so a shared role cannot say
"its own topic"). Commands go to the plugin's control topic and take effect at once: a disabled
device is disconnected and cannot log in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

import gmqtt
import structlog

from core.config import MqttEndpoint
from core.db import Connection
from core.errors import Unavailable
from core.mqtt import connect, connect_when_possible, make_client
from devices import repository
from devices.contract import Kind
from devices.schemas import MqttLogin

log = structlog.get_logger(__name__)

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
SECRET_BYTES: Final = 24
# The plugin rewrites its whole store after each change, so a batch takes longer the more
# devices the broker already knows: the wait grows with the batch.
PER_COMMAND_TIMEOUT_S: Final = 0.1

Command = dict[str, Any]


class BrokerUnavailable(Unavailable):
    """The broker did not answer a registry command in time (or we are not connected)."""

    default_code = "broker_unavailable"


class BrokerCommandFailed(Unavailable):
    """The broker refused a registry command; the message is the plugin's own reason."""

    default_code = "broker_refused"


class DeviceLogins(Protocol):
    """Where devices' broker logins live. Each call runs inside the registry's transaction on
    ``conn``, so a refusal (raised as ``Unavailable``) leaves the registry as it was."""

    async def commission(
        self, conn: Connection, devices: Sequence[tuple[Kind, MqttLogin, bool]]
    ) -> None:
        """Create each (kind, login, enabled) device's login from scratch."""

    async def rotate(
        self, conn: Connection, kind: Kind, login: MqttLogin, *, enabled: bool
    ) -> None:
        """Replace a device's secret; connections made with the old one are dropped."""

    async def set_enabled(self, conn: Connection, device_id: str, *, enabled: bool) -> None:
        """Allow or refuse a device's login; disabling drops its connections."""

    async def after_commit(self, device_ids: Sequence[str]) -> None:
        """The change to these devices' logins is committed: drop connections they still hold
        where the broker does not do it by itself."""


def secret_digest(password: str) -> bytes:
    """What the registry keeps of a device's secret: 24 random bytes need no slow hash."""
    return hashlib.sha256(password.encode()).digest()


def secret_matches(password: str, digest: bytes) -> bool:
    return hmac.compare_digest(secret_digest(password), digest)


async def _store_secrets(conn: Connection, logins: Sequence[MqttLogin]) -> None:
    await repository.store_secrets(
        conn, [(login.username, secret_digest(login.password)) for login in logins]
    )


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def device_topic_prefix(kind: Kind, device_id: str) -> str:
    return f"alatau/{kind.value}/{device_id}/"


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_login(kind: Kind, device_id: str) -> MqttLogin:
    return MqttLogin(
        username=device_id,
        password=new_secret(),
        topic_prefix=device_topic_prefix(kind, device_id),
    )


def commission_commands(kind: Kind, login: MqttLogin, *, enabled: bool) -> list[Command]:
    """Create the device's role and login from scratch. Deleting first makes it idempotent: a
    registry write that failed after the broker applied it can simply be repeated."""
    role = device_role(login.username)
    commands: list[Command] = [
        {"command": "deleteClient", "username": login.username},
        {"command": "deleteRole", "rolename": role},
        {
            "command": "createRole",
            "rolename": role,
            "acls": [
                {
                    "acltype": "publishClientSend",
                    "topic": f"{device_topic_prefix(kind, login.username)}#",
                    "allow": True,
                }
            ],
        },
        {
            "command": "createClient",
            "username": login.username,
            "password": login.password,
            "roles": [{"rolename": role}],
        },
    ]
    if not enabled:
        commands.append({"command": "disableClient", "username": login.username})
    return commands


def rotate_commands(login: MqttLogin, *, enabled: bool) -> list[Command]:
    """A new secret; disabling and re-enabling drops any connection made with the old one."""
    commands: list[Command] = [
        {"command": "setClientPassword", "username": login.username, "password": login.password},
        {"command": "disableClient", "username": login.username},
    ]
    if enabled:
        commands.append({"command": "enableClient", "username": login.username})
    return commands


def enabled_commands(device_id: str, *, enabled: bool) -> list[Command]:
    return [{"command": "enableClient" if enabled else "disableClient", "username": device_id}]


# Answers that mean "already as wanted" for the idempotent deletes above.
_TOLERATED: Final = {
    ("deleteClient", "Client not found"),
    ("deleteRole", "Role not found"),
}


class DynsecClient:
    """Sends command batches to the plugin and waits for their answers, one batch at a time.

    The plugin answers only the client that asked, with one response per command in order; the
    correlation data of the batch's first command tells our answer from a stale one."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str, *, timeout_s: float = 30.0):
        self._endpoint = endpoint
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}
        self._ready = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None
        self.client = make_client(endpoint, client_id)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: gmqtt.Client, flags: int, rc: int, properties: Any) -> None:
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: gmqtt.Client, mid: int, qos: Any, properties: Any) -> None:
        self._ready.set()

    def _on_disconnect(self, client: gmqtt.Client, packet: Any, exc: Any = None) -> None:
        self._ready.clear()

    def _on_message(
        self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        try:
            responses = json.loads(payload)["responses"]
            token = responses[0].get("correlationData")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            log.warning("unreadable dynamic-security response", payload=payload[:200])
            return 0
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.set_result(responses)
        return 0

    async def start(self, wait_s: float = 5.0) -> None:
        """Connect, waiting up to ``wait_s`` for the subscription to the answers; an api must
        serve reads without the broker, so after that it keeps trying in the background."""
        try:
            await connect(self.client, self._endpoint)
            await asyncio.wait_for(self._ready.wait(), wait_s)
        except (OSError, TimeoutError) as exc:
            log.warning("device registry cannot reach the broker yet", error=repr(exc))
            if not self.client.is_connected:
                self._connecting = asyncio.create_task(
                    connect_when_possible(self.client, self._endpoint, "device registry")
                )

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self.client.is_connected:
            await self.client.disconnect()

    async def execute(self, commands: Sequence[Command]) -> list[dict[str, Any]]:
        """Run ``commands`` in one message; raise ``BrokerCommandFailed`` naming the first that
        failed (apart from deletes of what is already gone)."""
        if not commands:
            return []
        token = uuid.uuid4().hex
        batch = [dict(commands[0], correlationData=token), *commands[1:]]
        async with self._lock:
            if not self._ready.is_set():
                raise BrokerUnavailable("the device registry is not connected to the broker")
            future: asyncio.Future[list[dict[str, Any]]] = (
                asyncio.get_running_loop().create_future()
            )
            self._pending[token] = future
            self.client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            timeout_s = self._timeout_s + PER_COMMAND_TIMEOUT_S * len(batch)
            try:
                responses = await asyncio.wait_for(future, timeout_s)
            except TimeoutError as exc:
                raise BrokerUnavailable(
                    f"the broker did not answer {len(batch)} registry command(s) "
                    f"within {timeout_s:.0f}s"
                ) from exc
            finally:
                self._pending.pop(token, None)
        for command, response in zip(batch, responses, strict=False):
            error = response.get("error")
            if error and (command["command"], error) not in _TOLERATED:
                subject = command.get("username") or command.get("rolename") or ""
                raise BrokerCommandFailed(f"{command['command']} {subject}: {error}")
        return responses


class DynsecLogins:
    """Device logins in Mosquitto's dynamic-security store, changed through its control topic
    (the registry keeps the secrets' digests too, so a deployment can move to the city edge
    without re-issuing them). The plugin drops connections by itself."""

    def __init__(self, client: DynsecClient) -> None:
        self.client = client

    async def commission(
        self, conn: Connection, devices: Sequence[tuple[Kind, MqttLogin, bool]]
    ) -> None:
        commands: list[Command] = []
        for kind, login, enabled in devices:
            commands += commission_commands(kind, login, enabled=enabled)
        await _store_secrets(conn, [login for _, login, _ in devices])
        await self.client.execute(commands)

    async def rotate(
        self, conn: Connection, kind: Kind, login: MqttLogin, *, enabled: bool
    ) -> None:
        await _store_secrets(conn, [login])
        await self.client.execute(rotate_commands(login, enabled=enabled))

    async def set_enabled(self, conn: Connection, device_id: str, *, enabled: bool) -> None:
        await self.client.execute(enabled_commands(device_id, enabled=enabled))

    async def after_commit(self, device_ids: Sequence[str]) -> None:
        return None


# Drops every open connection of a device at the broker.
Disconnect = Callable[[str], Awaitable[object]]


class RegistryLogins:
    """Device logins kept only by the registry: the city edge's broker asks the api (RabbitMQ's
    HTTP auth backend, behind its cache) and the api checks the digests here, so commissioning
    is one row per device. Disabling or rotating drops the device's connections after the
    commit, and again once the broker's cache of its old answer has expired, so a reconnect in
    between does not outlive the change."""

    def __init__(self, disconnect: Disconnect, cache_ttl_s: float) -> None:
        self._disconnect = disconnect
        self._cache_ttl_s = cache_ttl_s
        self._later: set[asyncio.Task[None]] = set()

    async def commission(
        self, conn: Connection, devices: Sequence[tuple[Kind, MqttLogin, bool]]
    ) -> None:
        await _store_secrets(conn, [login for _, login, _ in devices])

    async def rotate(
        self, conn: Connection, kind: Kind, login: MqttLogin, *, enabled: bool
    ) -> None:
        await _store_secrets(conn, [login])

    async def set_enabled(self, conn: Connection, device_id: str, *, enabled: bool) -> None:
        return None

    async def after_commit(self, device_ids: Sequence[str]) -> None:
        for device_id in device_ids:
            await self._drop(device_id)
            task = asyncio.create_task(self._drop_again(device_id))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _drop(self, device_id: str) -> None:
        try:
            await self._disconnect(device_id)
        except (OSError, Unavailable) as exc:
            log.warning(
                "could not drop a device's connections", device_id=device_id, error=repr(exc)
            )

    async def _drop_again(self, device_id: str) -> None:
        await asyncio.sleep(self._cache_ttl_s + 1.0)
        await self._drop(device_id)

    def close(self) -> None:
        for task in list(self._later):
            task.cancel()
