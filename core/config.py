"""The one configuration of every process, read from the environment (prefix ``ALATAU_``).

``DATABASE_URL``, ``DATABASE_READ_URL`` and ``MQTT_URL`` are also read without the prefix, the
names operators expect.
Nested sections use ``__``: ``ALATAU_INGEST__BATCH_SIZE=2000``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql://alatau@127.0.0.1:55432/alatau"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:18830"


MqttProtocol = Literal["5", "3.1.1"]


class MqttEndpoint(BaseModel):
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    # MQTT 5 on Mosquitto; the city edge's RabbitMQ 3.10 speaks 3.1.1 only.
    protocol: MqttProtocol = "5"


class BrokerIdentity(BaseModel):
    """A process's own broker login; unset, the credentials of ``MQTT_URL`` (if any) are used.

    Each process has its own identity with only the rights it needs (see the README)."""

    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """``mqtt://user:pass@host:port`` or ``mqtts://...``; fails fast on anything else."""
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"}:
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    tls = parts.scheme in {"mqtts", "ssl"}
    return MqttEndpoint(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


class DatabaseSettings(BaseModel):
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    command_timeout_s: float = Field(default=30.0, gt=0)


class IngestSettings(BrokerIdentity):
    client_id: str = Field(default="alatau-ingest-1", description="fixed per replica")
    share_group: str | None = Field(
        default=None,
        description="replicas in one group share the stream ($share); unset, the one replica "
        "holds an ordinary persistent subscription, which the broker restores after a restart",
    )
    batch_size: int = Field(default=5000, ge=1, description="readings per database write")
    flush_interval_s: float = Field(default=0.2, gt=0, description="longest a reading waits")
    flush_concurrency: int = Field(default=2, ge=1, description="batches written at once")
    max_unacked: int = Field(default=20_000, ge=1, description="messages received, not yet acked")
    max_payload_bytes: int = Field(default=256 * 1024, ge=64)
    late_window_s: float = Field(default=7 * 86_400, gt=0, description="oldest accepted reading")
    session_expiry_s: int = Field(default=86_400, ge=0)
    device_refresh_s: float = Field(default=10.0, gt=0, description="registry re-read period")
    unknown_device_recheck_s: float = Field(default=5.0, ge=0)
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    metrics_port: int | None = Field(default=None, description="Prometheus exporter port")
    retire_on_stop: bool = Field(
        default=False,
        description="leave the share group for good on stop: drain, then end the session "
        "(for scaling down; a restarting replica keeps its session instead)",
    )
    retire_quiet_s: float = Field(default=2.0, gt=0, description="drained after this silence")
    rejections_retention_days: float = Field(default=30, gt=0)
    retention_interval_s: float = Field(default=3600, gt=0, description="how often to apply it")
    echo_rate_per_s: float = Field(
        default=1.0,
        ge=0,
        description="rejection echoes a device gets per second on its errors topic, per replica"
        " (0: none); beyond the burst they are dropped and counted",
    )
    echo_burst: int = Field(default=20, ge=1, description="echoes a device may get at once")

    @field_validator("share_group")
    @classmethod
    def _empty_group_is_none(cls, value: str | None) -> str | None:
        return value or None


class ApiSettings(BrokerIdentity):
    host: str = "127.0.0.1"
    port: int = 8000
    # Processes serving the port (uvicorn workers). One process is one core: on the city edge
    # every device login not in the broker's cache is a request here, and a node gives up on
    # an answer after its auth timeout and refuses the login.
    workers: int = Field(default=1, ge=1)
    max_page_size: int = Field(default=10_000, ge=1)
    default_page_size: int = Field(default=1000, ge=1)
    max_buckets: int = Field(default=10_000, ge=1)


class LiveSettings(BaseModel):
    """Live feeds of the api: its own MQTT subscription, fanned out to SSE/WebSocket clients."""

    enabled: bool = True
    client_id_prefix: str = "alatau-api-live"
    heartbeat_s: float = Field(default=15.0, gt=0, description="keep-alive period of a feed")
    max_connection_s: float = Field(default=3600.0, gt=0, description="then the client reconnects")
    reconnect_ms: int = Field(default=1000, ge=0, description="reconnect hint sent to clients")
    device_refresh_s: float = Field(default=30.0, gt=0, description="registry re-read period")
    unknown_device_recheck_s: float = Field(default=5.0, ge=0)
    max_clients: int = Field(default=1000, ge=1)


class AlertSettings(BaseModel):
    """The alert evaluator runs in every api replica; an advisory lock lets one work at a time."""

    enabled: bool = True
    evaluate_interval_s: float = Field(default=5.0, gt=0)


class RollupSettings(BaseModel):
    """The rollup worker (``python -m rollups``) and retention per tier (days; None keeps all)."""

    interval_s: float = Field(default=1.0, gt=0, description="pause when nothing is dirty")
    batch_minutes: int = Field(default=5000, ge=1, description="dirty minutes per transaction")
    raw_retention_days: float | None = Field(default=30, gt=0)
    minute_retention_days: float | None = Field(default=365, gt=0)
    hour_retention_days: float | None = Field(default=None, gt=0)
    day_retention_days: float | None = Field(default=None, gt=0)
    retention_interval_s: float = Field(default=3600, gt=0, description="how often to apply it")
    compress_after_days: float = Field(default=30, gt=0, description="licensed edition only")
    expected_interval_s: float = Field(
        default=60, gt=0, description="a device's reading period unless its metadata says"
    )
    retry_initial_s: float = Field(default=0.5, gt=0, description="first wait for the database")
    retry_max_s: float = Field(default=10.0, gt=0, description="longest wait between tries")


class EdgeSettings(BaseModel):
    """Which broker devices reach and ingest reads: Mosquitto on one machine (the default), or
    a RabbitMQ cluster, the city edge: devices speak MQTT to any node, their readings land in
    one quorum queue, and ingest replicas consume it over AMQP as competing consumers."""

    broker: Literal["mosquitto", "rabbitmq"] = "mosquitto"
    amqp_url: str = Field(
        default="amqp://127.0.0.1:5682/,amqp://127.0.0.1:5683/,amqp://127.0.0.1:5684/",
        description="the cluster's nodes, comma-separated (a replica moves on when one fails)",
    )
    management_url: str = Field(
        default="http://127.0.0.1:15682/api,http://127.0.0.1:15683/api,http://127.0.0.1:15684/api",
        description="the nodes' management HTTP API, comma-separated",
    )
    vhost: str = "/"
    queue: str = "alatau.ingest"
    auth_token: SecretStr | None = Field(
        default=None,
        description="the secret in the broker's HTTP-auth URLs (/internal/broker/{token}/...):"
        " only the broker knows it; unset, the api answers no login check",
    )
    auth_cache_ttl_s: float = Field(
        default=5.0, gt=0, description="how long the broker caches an allowed login or topic"
    )
    prefetch: int = Field(
        default=10_000, ge=1, description="deliveries a replica holds unacknowledged at most"
    )
    reconnect_delay_s: float = Field(default=0.5, gt=0)

    @property
    def amqp_urls(self) -> list[str]:
        return _split(self.amqp_url)

    @property
    def management_urls(self) -> list[str]:
        return _split(self.management_url)


def _split(urls: str) -> list[str]:
    return [url.strip() for url in urls.split(",") if url.strip()]


class DeviceConnectSettings(BaseModel):
    """Where devices connect, as the registration answer tells them (``connect``). Unset
    fields come from ``MQTT_URL`` (its first node's host; its port as the plain or TLS port by
    its scheme); a deployment whose devices reach the broker by another name sets them."""

    host: str | None = Field(default=None, description="the broker's name as devices reach it")
    mqtt_port: int | None = Field(default=None, description="plain MQTT; unset: MQTT_URL's")
    mqtts_port: int | None = Field(default=None, description="MQTT over TLS")
    ca_file: str | None = Field(
        default=None, description="PEM of the CA that signs the TLS listener, sent inline"
    )
    ca_url: str | None = Field(default=None, description="where devices fetch that CA instead")


class SimulatorSettings(BrokerIdentity):
    api_url: str = "http://127.0.0.1:8000"
    client_id_prefix: str = "alatau-sim"
    # How a fleet comes up, per simulator process: at most this many CONNECTs awaiting their
    # CONNACK at once, started at most this many a second (a city's devices powering on
    # together must not ask the broker, and its auth backend, for every login at once).
    connect_concurrency: int = Field(default=50, ge=1)
    connect_rate_hz: float = Field(default=100.0, gt=0)
    # A refused or failed CONNECT is retried, as firmware does, after a pause that doubles
    # from ``connect_backoff_s`` up to ``connect_backoff_max_s`` with full jitter.
    connect_backoff_s: float = Field(default=1.0, gt=0)
    connect_backoff_max_s: float = Field(default=60.0, gt=0)
    # An attempt whose CONNACK has not come by then is abandoned and retried.
    connect_attempt_timeout_s: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ALATAU_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("ALATAU_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    database_read_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ALATAU_DATABASE_READ_URL", "DATABASE_READ_URL", "database_read_url"
        ),
        description="a streaming replica of DATABASE_URL for the api's reads that tolerate its "
        "lag; unset, those reads go to the primary",
    )
    mqtt_url: str = Field(
        default=DEFAULT_MQTT_URL,
        validation_alias=AliasChoices("ALATAU_MQTT_URL", "MQTT_URL", "mqtt_url"),
        description="the broker, or a cluster's nodes comma-separated (devices are spread)",
    )
    mqtt_protocol: MqttProtocol = Field(
        default="5", description="the MQTT version devices and services speak to the broker"
    )
    mqtt_ca_file: str | None = Field(
        default=None, description="CA bundle that signs the broker's TLS certificate (mqtts://)"
    )
    database: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()
    live: LiveSettings = LiveSettings()
    alerts: AlertSettings = AlertSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    rollups: RollupSettings = RollupSettings()
    edge: EdgeSettings = EdgeSettings()
    device_connect: DeviceConnectSettings = DeviceConnectSettings()

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url_parses(cls, value: str) -> str:
        for url in _split(value):
            parse_mqtt_url(url)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"postgres", "postgresql"}:
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator("database_read_url")
    @classmethod
    def _read_url_is_postgres(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in {"postgres", "postgresql"}:
            raise ValueError("DATABASE_READ_URL must be a postgresql:// URL")
        return value

    @property
    def mqtt(self) -> MqttEndpoint:
        """The broker (a cluster's first node)."""
        return self.mqtt_endpoints[0]

    @property
    def mqtt_endpoints(self) -> list[MqttEndpoint]:
        """Every node of ``MQTT_URL``, each with the CA file and protocol of the settings."""
        update: dict[str, object] = {"protocol": self.mqtt_protocol}
        if self.mqtt_ca_file is not None:
            update["ca_file"] = self.mqtt_ca_file
        return [parse_mqtt_url(url).model_copy(update=update) for url in _split(self.mqtt_url)]

    def mqtt_as(self, identity: BrokerIdentity) -> MqttEndpoint:
        """The broker endpoint logged in as ``identity`` (``self.ingest``, ``self.api``...)."""
        endpoint = self.mqtt
        if identity.mqtt_username is None:
            return endpoint
        password = identity.mqtt_password.get_secret_value() if identity.mqtt_password else None
        return endpoint.model_copy(
            update={"username": identity.mqtt_username, "password": password}
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
