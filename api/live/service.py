"""Each api replica's own view of the live stream: a non-shared, clean MQTT subscription,
the same validation as ingest, and a registry cache; readings go to the hub."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, Final

import asyncpg
import structlog

from api import repository as api_repository
from api.live import metrics
from api.live.hub import LiveHub
from api.live.sources import AmqpSource, LiveSource, MqttSource
from core.config import Settings
from core.db import DATABASE_UNAVAILABLE
from core.tasks import TaskSet
from devices.contract import Kind, metric_names
from devices.contract import utc_now as now
from devices.service import DeviceDirectory
from ingest.parser import parse_message
from ingest.schemas import ParsedMessage

log = structlog.get_logger(__name__)

_METRICS: Final = {kind: metric_names(kind) for kind in Kind}


class LiveService:
    """Subscribes this replica to every telemetry topic (QoS 0: a live view never holds the
    broker back) and publishes validated readings of registered, enabled devices."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, read_pool: asyncpg.Pool | None = None
    ) -> None:
        self._settings = settings
        # The registry's periodic reload and the snapshot's newest readings tolerate a
        # replica's lag (the stream corrects them); a device the directory does not know yet
        # was perhaps registered a moment ago, so it is looked up on the primary.
        self._pool = pool
        self._read_pool = read_pool or pool
        self.replica_id = uuid.uuid4().hex[:8]
        self.hub = LiveHub(self.replica_id)
        self._late_window = timedelta(seconds=settings.ingest.late_window_s)
        self._directory = DeviceDirectory(
            refresh_s=settings.live.device_refresh_s,
            recheck_s=settings.live.unknown_device_recheck_s,
        )
        self._unresolved: dict[str, ParsedMessage] = {}
        self._resolve = asyncio.Event()
        self._tasks = TaskSet()
        name = f"{settings.live.client_id_prefix}-{self.replica_id}"
        self.source: LiveSource
        if settings.edge.broker == "rabbitmq":
            self.source = AmqpSource(
                settings, f"alatau.live.{self.replica_id}", self._on_message, self._on_gap
            )
        else:
            self.source = MqttSource(settings, name, self._on_message, self._on_gap)
        self.hub.on_filters = self.source.want

    async def start(self) -> None:
        """Load the registry and the newest readings, then subscribe and wait for the grant."""
        await self.refresh_devices()
        await self.warm()
        self._spawn(self._refresh_loop(), "live-registry")
        self._spawn(self._resolve_loop(), "live-resolver")
        await self.source.start()
        log.info("live feed started", replica=self.replica_id, edge=self._settings.edge.broker)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` until it ends or the service stops (a reconnect refills the snapshot
        each time; its task is let go when it finishes)."""
        self._tasks.spawn(work, name)

    async def stop(self) -> None:
        await self._tasks.cancel()
        await self.source.stop()

    # --- registry and snapshot ----------------------------------------------------------------

    async def refresh_devices(self) -> None:
        async with self._read_pool.acquire() as conn:
            devices = await self._directory.reload(conn)
        self.hub.forget(
            [
                device_id
                for device_id in self.hub.latest
                if device_id not in devices or not devices[device_id].enabled
            ]
        )

    async def warm(self) -> None:
        """Fill the snapshot with the stored newest reading of every device (after a start or a
        reconnect, when this replica may have missed readings)."""
        async with self._read_pool.acquire() as conn:
            for kind in Kind:
                for row in await api_repository.latest_readings(conn, kind, None):
                    device = self._directory.get(row["device_id"])
                    if device is None or not device.enabled:
                        continue
                    self.hub.publish(
                        device_id=row["device_id"],
                        kind=kind,
                        district=device.district,
                        ts=row["ts"],
                        received_at=row["received_at"],
                        values={name: row[name] for name in _METRICS[kind]},
                    )

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.live.device_refresh_s)
            try:
                await self.refresh_devices()
            except DATABASE_UNAVAILABLE as exc:
                log.warning("live registry refresh postponed", error=repr(exc))

    async def _resolve_loop(self) -> None:
        """Look up devices the cache does not know yet; deliver their held newest reading."""
        while True:
            await self._resolve.wait()
            self._resolve.clear()
            held, self._unresolved = self._unresolved, {}
            ask = self._directory.due_for_lookup(held)
            if not ask:
                continue
            try:
                async with self._pool.acquire() as conn:
                    await self._directory.look_up(conn, ask)
            except DATABASE_UNAVAILABLE as exc:
                log.warning("live device lookup failed", error=repr(exc))
                continue
            for device_id in ask:
                if self._directory.get(device_id) is not None:
                    self._deliver(held[device_id])

    # --- the broker ---------------------------------------------------------------------------

    def _on_gap(self) -> None:
        """The source may have missed readings: refill the snapshot from the database."""
        self._spawn(self._rewarm(), "live-rewarm")

    async def _rewarm(self) -> None:
        try:
            await self.warm()
        except DATABASE_UNAVAILABLE as exc:
            log.warning("live snapshot refill failed", error=repr(exc))

    def _on_message(self, topic: str, payload: bytes) -> None:
        message = parse_message(
            topic,
            payload,
            now(),
            max_payload_bytes=self._settings.ingest.max_payload_bytes,
            late_window=self._late_window,
        )
        if message.rows and message.device_id is not None:
            if self._directory.get(message.device_id) is not None:
                self._deliver(message)
            else:
                self._unresolved[message.device_id] = message
                self._resolve.set()
        else:
            metrics.DROPPED.inc()

    def _deliver(self, message: ParsedMessage) -> None:
        """Offer the message's newest reading, if its device is registered, enabled and of the
        topic's kind: the same rule ingest applies before storing."""
        device = self._directory.get(message.device_id or "")
        kind = message.kind
        if device is None or not device.enabled or kind is None or device.kind is not kind:
            metrics.DROPPED.inc()
            return
        metrics.READINGS.labels(kind.value).inc()
        row = max(message.rows, key=lambda r: r[1])
        device_id, ts, received_at, *values = row
        self.hub.publish(
            device_id=device_id,
            kind=kind,
            district=device.district,
            ts=ts,
            received_at=received_at,
            values=dict(zip(_METRICS[kind], values, strict=True)),
        )
