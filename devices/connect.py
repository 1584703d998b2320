"""Where a device connects, as its registration answer says: host, ports, protocol and the CA
of the configured edge's broker, from the settings (``ALATAU_DEVICE_CONNECT__*``, else
``MQTT_URL``)."""

from __future__ import annotations

from pathlib import Path

import structlog

from core.config import Settings
from devices.contract import Kind, errors_topic
from devices.schemas import ConnectPorts, DeviceConnect

log = structlog.get_logger(__name__)


def _ca_pem(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except OSError as exc:
        # Configured but unreadable: the answer says nothing rather than something wrong.
        log.warning("device CA file unreadable", path=path, error=repr(exc))
        return None


def device_connect(settings: Settings, kind: Kind, device_id: str) -> DeviceConnect:
    """The ``connect`` part of a device's registration answer."""
    wanted = settings.device_connect
    nodes = settings.mqtt_endpoints
    first = nodes[0]
    plain = (
        wanted.mqtt_port if wanted.mqtt_port is not None else (None if first.tls else first.port)
    )
    secure = (
        wanted.mqtts_port if wanted.mqtts_port is not None else (first.port if first.tls else None)
    )
    host = wanted.host or first.host
    return DeviceConnect(
        edge=settings.edge.broker,
        host=host,
        ports=ConnectPorts(mqtt=plain, mqtts=secure),
        nodes=[f"{wanted.host or node.host}:{node.port}" for node in nodes],
        protocol=settings.mqtt_protocol,
        client_id=device_id,
        tls_ca_pem=_ca_pem(wanted.ca_file or first.ca_file),
        tls_ca_url=wanted.ca_url,
        errors_topic=errors_topic(kind, device_id),
    )
