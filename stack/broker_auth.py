"""The service identities of a private broker, written into its dynamic-security store.

Anonymous access is off. Ingest, the api and the simulator each log in as themselves, with only
the rights they need:

- ``service.ingest`` subscribes to ``alatau/#`` and to the refusals the broker reports on
  ``alatau-broker/refused`` (stack/mosquitto_refusals.c), shared or not, and publishes only each
  device's rejection echoes on ``alatau/{kind}/{id}/errors``;
- ``service.api`` subscribes to ``alatau/#`` for the live feeds and administers the plugin, since
  the registry issues, rotates and disables device logins through it;
- ``service.simulator`` publishes on ``alatau/#``: it stands in for many devices at once (replay,
  faulty firmware, benchmarks). Simulated devices registered through the api log in as
  themselves instead. A production broker does not get this identity.

Service usernames contain a dot, which device ids cannot, so the two never collide. The store is
written only while the broker is stopped (the plugin reads it at start and owns it after); device
logins already in it are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from core.config import Settings
from devices.credentials import device_acls

HASH_ITERATIONS: Final = 101  # what mosquitto_ctrl uses
CONTROL_ACL: Final = "$CONTROL/dynamic-security/#"

SERVICE_ROLES: Final[dict[str, list[dict[str, Any]]]] = {
    "ingest": [
        # Mosquitto checks a shared subscription with its $share/{group}/ prefix.
        {"acltype": "subscribePattern", "topic": "$share/+/alatau/#", "allow": True},
        {"acltype": "subscribePattern", "topic": "alatau/#", "allow": True},
        {"acltype": "subscribePattern", "topic": "$share/+/alatau-broker/refused", "allow": True},
        {"acltype": "subscribePattern", "topic": "alatau-broker/refused", "allow": True},
        {"acltype": "publishClientSend", "topic": "alatau/+/+/errors", "allow": True},
    ],
    "api": [
        {"acltype": "subscribePattern", "topic": "alatau/#", "allow": True},
        {"acltype": "publishClientSend", "topic": CONTROL_ACL, "allow": True},
        {"acltype": "publishClientReceive", "topic": CONTROL_ACL, "allow": True},
        {"acltype": "subscribePattern", "topic": CONTROL_ACL, "allow": True},
    ],
    "simulator": [
        {"acltype": "publishClientSend", "topic": "alatau/#", "allow": True},
    ],
}

DEFAULT_ACL_ACCESS: Final = {
    "publishClientSend": False,
    "publishClientReceive": True,
    "subscribe": False,
    "unsubscribe": True,
}


def service_username(service: str) -> str:
    return f"service.{service}"


def load_or_create_passwords(path: Path, services: Iterable[str] = SERVICE_ROLES) -> dict[str, str]:
    """The services' passwords, made once and kept beside the broker's data (mode 600)."""
    try:
        passwords: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        passwords = {}
    missing = [service for service in services if service not in passwords]
    if missing:
        passwords.update({service: secrets.token_urlsafe(24) for service in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(passwords, indent=2))
        path.chmod(0o600)
    return passwords


def _hashed(password: str) -> dict[str, Any]:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": HASH_ITERATIONS,
    }


def write_service_identities(store: Path, passwords: dict[str, str]) -> None:
    """Create or update the plugin's store with the service roles and logins, keeping devices."""
    try:
        config: dict[str, Any] = json.loads(store.read_text())
    except FileNotFoundError:
        config = {"clients": [], "groups": [], "roles": []}
    config["defaultACLAccess"] = DEFAULT_ACL_ACCESS
    service_names = {service_username(service) for service in SERVICE_ROLES}
    config["roles"] = [
        role for role in config.get("roles", []) if role["rolename"] not in service_names
    ] + [
        {"rolename": service_username(service), "acls": acls}
        for service, acls in SERVICE_ROLES.items()
    ]
    for role in config["roles"]:
        _upgrade_device_role(role)
    config["clients"] = [
        client for client in config.get("clients", []) if client["username"] not in service_names
    ] + [
        {
            "username": service_username(service),
            "textname": f"alatau {service}",
            **_hashed(passwords[service]),
            "roles": [{"rolename": service_username(service)}],
        }
        for service in SERVICE_ROLES
    ]
    store.write_text(json.dumps(config, indent=1))


def _upgrade_device_role(role: dict[str, Any]) -> None:
    """A device role written by an earlier version (publish only) gets today's rights, its
    errors topic included; its prefix is read from its publish ACL."""
    if not role["rolename"].startswith("device-"):
        return
    for acl in role.get("acls", []):
        topic = acl.get("topic", "")
        if acl.get("acltype") == "publishClientSend" and acl.get("allow") and topic.endswith("#"):
            role["acls"] = device_acls(topic[:-1])
            return


def login_environment(settings: Settings) -> dict[str, str]:
    """The processes' logins in ``settings`` as environment variables (core/config.py names),
    for the processes we start."""
    env: dict[str, str] = {}
    for service in SERVICE_ROLES:
        section = getattr(settings, service)
        if section.mqtt_username is not None and section.mqtt_password is not None:
            prefix = f"ALATAU_{service.upper()}__MQTT_"
            env[f"{prefix}USERNAME"] = section.mqtt_username
            env[f"{prefix}PASSWORD"] = section.mqtt_password.get_secret_value()
    return env


def with_identities(settings: Settings, passwords: dict[str, str]) -> Settings:
    """``settings`` with each process's login filled in, for processes built in Python."""
    sections: dict[str, Any] = {}
    for service in SERVICE_ROLES:
        section = getattr(settings, service)
        sections[service] = section.model_copy(
            update={
                "mqtt_username": service_username(service),
                "mqtt_password": SecretStr(passwords[service]),
            }
        )
    return settings.model_copy(update=sections)


def main() -> None:
    """``python -m stack.broker_auth STORE [UID:GID]``: write the services' identities into a
    broker's store, their passwords from ``ALATAU_{SERVICE}__MQTT_PASSWORD`` (for deployments
    such as docker-compose, whose broker starts after this)."""
    import sys

    if len(sys.argv) not in {2, 3}:
        sys.exit("usage: python -m stack.broker_auth STORE [UID:GID]")
    store = Path(sys.argv[1])
    variables = {service: f"ALATAU_{service.upper()}__MQTT_PASSWORD" for service in SERVICE_ROLES}
    missing = [name for name in variables.values() if not os.environ.get(name)]
    if missing:
        sys.exit(f"set {', '.join(missing)}")
    write_service_identities(store, {s: os.environ[v] for s, v in variables.items()})
    if len(sys.argv) == 3:
        uid, _, gid = sys.argv[2].partition(":")
        os.chown(store, int(uid), int(gid or uid))


if __name__ == "__main__":
    main()
