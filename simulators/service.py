"""Runs a simulated fleet over MQTT: one client per device, as real firmware connects.

Each device announces itself with a retained ``online`` on its status topic (``offline`` is its
Last Will), publishes its readings at QoS 1 on its telemetry topic, and on a clean stop waits
until the broker has acknowledged everything, publishes a retained ``offline`` and disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import gmqtt
import orjson
import structlog

from core.config import Settings
from core.mqtt import connect, make_client, publish_when_possible, wait_published
from devices.contract import Kind, status_topic, telemetry_topic
from simulators.models import DeviceStream
from simulators.randomness import stable_key, uniform
from simulators.registry import register_devices
from simulators.schemas import SimDevice, SimulationPlan, SimulationStats

log = structlog.get_logger(__name__)

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
# A device that reconnects within this time resumes its session: the broker keeps what it had
# not acknowledged and gmqtt resends it, so a dropped connection loses nothing.
SESSION_EXPIRY_S: Final = 300
CONNECT_CONCURRENCY: Final = 50
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 10.0

Published = tuple[Kind, str, dict[str, Any]]


class SimulationError(Exception):
    """The simulation could not run (devices could not connect, or it is already running)."""


@dataclass(eq=False)
class _Running:
    """One device during a run: its reading stream, its MQTT client and its topics."""

    device: SimDevice
    stream: DeviceStream
    client: Any  # gmqtt.Client (untyped)
    telemetry: str
    status: str
    phase_s: float
    online: bool = False
    ever_connected: bool = False
    announcing: asyncio.Future[None] | None = None


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Simulation:
    """A fleet of simulated devices publishing readings at a fixed pace over MQTT."""

    def __init__(
        self,
        settings: Settings,
        devices: Sequence[SimDevice],
        *,
        rate_hz: float = 1.0,
        count: int | None = None,
        seed: int = 42,
        batch_size: int = 1,
        start: datetime | None = None,
        time_step_s: float | None = None,
        record: bool = False,
        api_key: str | None = None,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self.plan = SimulationPlan.resolve(
            rate_hz=rate_hz,
            count=count,
            seed=seed,
            batch_size=batch_size,
            start=start,
            time_step_s=time_step_s,
        )
        ids = [device.device_id for device in devices]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique")
        self.settings = settings
        self.devices = list(devices)
        self.record = record
        self.published: list[Published] = []
        self.stats = SimulationStats(devices=len(self.devices))
        self._api_key = api_key
        self._shutdown_timeout_s = shutdown_timeout_s
        self._stop_requested = False
        self._running = False
        self._publishing: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` has been called."""
        return self._stop_requested

    def stop(self) -> None:
        """Ask a running simulation to stop publishing and shut down cleanly; ``run`` returns
        once every device has said ``offline`` and disconnected."""
        self._stop_requested = True
        if self._publishing is not None and not self._publishing.done():
            self._publishing.cancel()

    async def run(self, *, register: bool = False) -> SimulationStats:
        """Register (optionally), connect every device, publish until ``count`` readings per
        device are acknowledged or until stopped or cancelled, then shut down cleanly."""
        if self._running:
            raise SimulationError("this simulation is already running")
        self._running = True
        try:
            if register:
                await register_devices(
                    self.settings.simulator.api_url, self.devices, api_key=self._api_key
                )
            fleet = [self._prepare(device) for device in self.devices]
            try:
                await self._connect_all(fleet)
                log.info(
                    "simulation started",
                    devices=len(fleet),
                    rate_hz=self.plan.rate_hz,
                    batch_size=self.plan.batch_size,
                    count=self.plan.count,
                    start=self.plan.start.isoformat(),
                    acceleration=round(self.plan.acceleration, 3),
                )
                if not self._stop_requested:
                    self._publishing = asyncio.create_task(self._publish_all(fleet))
                    try:
                        await self._publishing
                    except asyncio.CancelledError:
                        if not self._stop_requested or _being_cancelled():
                            raise
            finally:
                await asyncio.gather(*(self._close(running) for running in fleet))
                log.info(
                    "simulation stopped",
                    messages=self.stats.messages_sent,
                    readings=self.stats.readings_sent,
                    errors=self.stats.errors,
                )
        finally:
            self._publishing = None
            self._running = False
        return self.stats

    def _prepare(self, device: SimDevice) -> _Running:
        plan = self.plan
        status = status_topic(device.kind, device.device_id)
        client = make_client(
            self.settings.mqtt_as(self.settings.simulator),
            f"{self.settings.simulator.client_id_prefix}-{device.device_id}",
            clean_session=True,
            will=gmqtt.Message(status, OFFLINE, qos=1, retain=True),
            session_expiry_interval=SESSION_EXPIRY_S,
        )
        phase = uniform(stable_key(plan.seed, device.device_id, "phase"))
        running = _Running(
            device=device,
            stream=DeviceStream(device, seed=plan.seed, start=plan.start, step_s=plan.time_step_s),
            client=client,
            telemetry=telemetry_topic(device.kind, device.device_id),
            status=status,
            phase_s=phase * plan.message_interval_s,
        )

        def on_connect(client: Any, flags: int, rc: int, properties: Any) -> None:
            # Also after a reconnect: the broker may have published the Last Will meanwhile.
            try:
                client.publish(status, ONLINE, qos=1, retain=True)
            except OverflowError:
                # The in-flight window is full of resent readings: announce once there is room.
                running.announcing = asyncio.ensure_future(
                    publish_when_possible(client, status, ONLINE, retain=True)
                )
            running.ever_connected = True
            if not running.online:
                running.online = True
                self.stats.connected += 1

        def on_disconnect(client: Any, packet: Any, exc: Any = None) -> None:
            if running.online:
                running.online = False
                self.stats.connected -= 1

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        return running

    async def _connect_all(self, fleet: list[_Running]) -> None:
        endpoint = self.settings.mqtt_as(self.settings.simulator)
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect_one(running: _Running) -> None:
            async with limit:
                await connect(running.client, endpoint)

        results = await asyncio.gather(
            *(connect_one(running) for running in fleet), return_exceptions=True
        )
        failures: list[Exception] = []
        for result in results:
            if isinstance(result, Exception):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
        if failures:
            self.stats.errors += len(failures)
            raise SimulationError(
                f"{len(failures)} of {len(fleet)} devices could not connect to "
                f"{endpoint.host}:{endpoint.port}; first error: {failures[0]!r}"
            ) from failures[0]

    async def _publish_all(self, fleet: list[_Running]) -> None:
        async with asyncio.TaskGroup() as group:
            for running in fleet:
                group.create_task(self._publish_device(running))

    async def _publish_device(self, running: _Running) -> None:
        plan = self.plan
        loop = asyncio.get_running_loop()
        batched = plan.batch_size > 1
        # A batch leaves once the moment of its last reading has come; then one per interval.
        due = loop.time() + running.phase_s + (plan.batch_size - 1) / plan.rate_hz
        remaining = plan.count
        while remaining is None or remaining > 0:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            size = plan.batch_size if remaining is None else min(plan.batch_size, remaining)
            readings = running.stream.take(size)
            payload = orjson.dumps(readings if batched else readings[0])
            await publish_when_possible(running.client, running.telemetry, payload)
            self.stats.messages_sent += 1
            self.stats.readings_sent += size
            if self.record:
                device = running.device
                self.published.extend((device.kind, device.device_id, r) for r in readings)
            if remaining is not None:
                remaining -= size
            due += plan.message_interval_s

    async def _close(self, running: _Running) -> None:
        """Wait for the broker to acknowledge everything, say ``offline``, disconnect."""
        client = running.client
        if running.announcing is not None:
            running.announcing.cancel()  # an ``online`` must not overtake the ``offline``
        try:
            if running.ever_connected:
                async with asyncio.timeout(self._shutdown_timeout_s):
                    await wait_published(client)
                    await publish_when_possible(client, running.status, OFFLINE, retain=True)
                    await wait_published(client)
        except TimeoutError:
            self.stats.errors += 1
            log.warning(
                "device stopped before the broker acknowledged all its messages",
                device_id=running.device.device_id,
                timeout_s=self._shutdown_timeout_s,
            )
        finally:
            await client.disconnect()
            if running.online:
                running.online = False
                self.stats.connected -= 1
