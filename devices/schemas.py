"""Pydantic models of the reading contract and of the device registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

from core.timestamps import UtcTimestamp
from devices.contract import DEVICE_ID_PATTERN, METRICS, District, Kind, Metric

_MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: Any) -> datetime:
    """Accept RFC 3339 with an offset, or integer epoch milliseconds; nothing else."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")
    if isinstance(value, int):
        if not 0 <= value <= _MAX_EPOCH_MS:
            raise ValueError("ts epoch milliseconds out of range")
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("ts is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError("ts needs a UTC offset (RFC 3339)")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01 with a positive offset falls before year 1 in UTC
            raise ValueError("ts is out of range") from None
    raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]


class ReadingBase(BaseModel):
    """Fields every reading has; the metric fields are added per kind from the contract."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ts: Timestamp

    @model_validator(mode="after")
    def _has_a_metric(self) -> ReadingBase:
        if all(getattr(self, name) is None for name in type(self).metric_fields()):
            raise ValueError("a reading needs at least one metric of its kind")
        return self

    @classmethod
    def metric_fields(cls) -> tuple[str, ...]:
        return tuple(name for name in cls.model_fields if name != "ts")


def _metric_field(metric: Metric) -> tuple[Any, Any]:
    python_type: type = int if metric.integer else float
    return (
        python_type | None,
        Field(
            default=None,
            ge=metric.minimum,
            le=metric.maximum,
            description=f"{metric.description} ({metric.unit})"
            if metric.unit
            else metric.description,
        ),
    )


def _reading_model(kind: Kind) -> type[ReadingBase]:
    fields = {metric.name: _metric_field(metric) for metric in METRICS[kind]}
    model: type[ReadingBase] = create_model(  # type: ignore[call-overload]
        f"{kind.value.capitalize()}Reading",
        __base__=ReadingBase,
        __doc__=f"One {kind.value} reading as published by a device.",
        **fields,
    )
    return model


READING_MODELS: Final[dict[Kind, type[ReadingBase]]] = {kind: _reading_model(kind) for kind in Kind}


DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN, examples=["gate-air-001"])]


class Location(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: DeviceId
    kind: Kind
    district: District
    location: Location | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class Device(BaseModel):
    device_id: str
    kind: Kind
    district: District
    location: Location | None
    metadata: dict[str, Any]
    enabled: bool
    status: str = Field(description="online, offline or unknown (from the device's status topic)")
    last_seen: UtcTimestamp | None = Field(description="arrival time of the newest stored reading")
    created_at: UtcTimestamp


class MqttLogin(BaseModel):
    """A device's broker login. The password is shown once, when issued; only the broker keeps
    it (hashed). The device may publish only under ``topic_prefix``."""

    username: str
    password: str
    topic_prefix: str = Field(examples=["alatau/air/gate-air-001/"])


class ConnectPorts(BaseModel):
    mqtt: int | None = Field(description="plain MQTT, None when the broker offers none")
    mqtts: int | None = Field(description="MQTT over TLS, None when the broker offers none")


class DeviceConnect(BaseModel):
    """Where and how the device connects: the broker of the configured edge."""

    edge: str = Field(examples=["mosquitto"], description="mosquitto, or rabbitmq (city edge)")
    host: str = Field(examples=["mqtt.alatau.city"])
    ports: ConnectPorts
    nodes: list[str] = Field(
        description="every node as host:port (the city edge: move to the next when one drops)"
    )
    protocol: str = Field(examples=["5"], description="MQTT version to speak: 5 or 3.1.1")
    client_id: str = Field(description="the client id to use: the device id")
    tls_ca_pem: str | None = Field(description="the CA that signs the TLS listener, PEM")
    tls_ca_url: str | None = Field(description="where to fetch that CA, when not inline")
    errors_topic: str = Field(description="subscribe here to learn why a reading was refused")


class CommissionedDevice(Device):
    """A device as registered, with the login its firmware needs and where to use it."""

    mqtt: MqttLogin
    connect: DeviceConnect | None = None


class DeviceStatus(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


class DevicePatch(BaseModel):
    """A partial update: only the fields sent change; ``location: null`` clears the location and
    ``metadata`` replaces the whole object."""

    model_config = ConfigDict(extra="forbid")

    district: District | None = None
    location: Location | None = None
    metadata: dict[str, Any] | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _no_null_for_required(self) -> DevicePatch:
        for name in ("district", "metadata", "enabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class DeviceBulkResult(BaseModel):
    created: list[CommissionedDevice] = Field(
        description="with each device's login (shown once) and where to connect"
    )
    skipped: list[str] = Field(description="ids already registered, left as they were")


class DevicePage(BaseModel):
    items: list[Device]
    total: int = Field(description="devices matching the filters, across all pages")
    limit: int
    offset: int


class DeviceInfo(NamedTuple):
    """What ingest and the live feeds need to know of a device to accept its readings."""

    kind: Kind
    district: District
    enabled: bool


class Presence(NamedTuple):
    """A batch's news of a device: a stored reading (``seen``) and/or a status message."""

    device_id: str
    kind: Kind
    seen: bool
    status: str | None
    # When ingest received that status: an older one never replaces a newer one.
    status_at: datetime | None = None
