"""Runs a simulated fleet over MQTT: one client per device, as real firmware connects.

Each device announces itself with a retained ``online`` on its status topic (``offline`` is its
Last Will), publishes its readings at QoS 1 on its telemetry topic, and on a clean stop waits
until the broker has acknowledged everything, publishes a retained ``offline`` and disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import gmqtt
import orjson
import structlog
from gmqtt.mqtt.handler import MQTTConnectError

from core.config import MqttEndpoint, Settings
from core.mqtt import (
    connect,
    make_client,
    publish_when_possible,
    refused_for_good,
    wait_published,
)
from devices.contract import Kind, status_topic, telemetry_topic
from devices.schemas import MqttLogin
from simulators.connecting import ConnectPacer, backoff_delay
from simulators.faults import DeviceFaults, Drop, FaultMode, FaultPlan, Send, Step
from simulators.models import DeviceStream, EnergyModel, format_ts, make_model
from simulators.randomness import stable_key, uniform
from simulators.registry import register_devices
from simulators.schemas import SimDevice, SimulationPlan, SimulationStats

log = structlog.get_logger(__name__)

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
# A device that reconnects within this time resumes its session: the broker keeps what it had
# not acknowledged and gmqtt resends it, so a dropped connection loses nothing.
SESSION_EXPIRY_S: Final = 300
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 10.0
DISCONNECT_WITH_WILL: Final = 0x04  # MQTT 5 reason code: the broker publishes the Will

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Published = tuple[Kind, str, dict[str, Any]]
Faulty = tuple[Kind, str, FaultMode, Any]


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
    faults: DeviceFaults | None = None
    meter_resets_seen: int = 0
    # While the simulation itself is (re)connecting the device, or closing it, a refused
    # login is not gmqtt's to give up on: nothing else must start connecting it meanwhile.
    connecting: bool = False
    closing: bool = False
    relogin: asyncio.Task[None] | None = None


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
        faults: FaultPlan | None = None,
        logins: dict[str, MqttLogin] | None = None,
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
        self.faults = faults if faults is not None else FaultPlan()
        # With ``record``: every reading ingest must store (once, as sent), and every faulty
        # reading (or malformed message's reading) with its fault.
        self.published: list[Published] = []
        self.faulty: list[Faulty] = []
        self.stats = SimulationStats(devices=len(self.devices))
        self._api_key = api_key
        # Registered devices log in as themselves; the others as the simulator's identity.
        self._logins: dict[str, MqttLogin] = dict(logins or {})
        self._shutdown_timeout_s = shutdown_timeout_s
        self._stop_requested = False
        self._stopped = asyncio.Event()
        self._pacer = ConnectPacer.from_settings(settings.simulator)
        self._jitter = random.Random()  # noqa: S311 - retry jitter, not a secret
        self._running = False
        self._publishing: asyncio.Task[None] | None = None

    def registry_metadata(self) -> dict[str, dict[str, Any]]:
        """Per device, what the registry should know: its reading period in reading time
        (``expected_interval_s``, what completeness counts against) and what its value model
        says (a road's ``free_flow_kmh``)."""
        return {
            device.device_id: {
                "expected_interval_s": self.plan.time_step_s,
                **make_model(device, self.plan.seed).registry_metadata(),
            }
            for device in self.devices
        }

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` has been called."""
        return self._stop_requested

    def stop(self) -> None:
        """Ask a running simulation to stop publishing and shut down cleanly; ``run`` returns
        once every device has said ``offline`` and disconnected."""
        self._stop_requested = True
        self._stopped.set()
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
                registered = await register_devices(
                    self.settings.simulator.api_url,
                    self.devices,
                    api_key=self._api_key,
                    metadata=self.registry_metadata(),
                )
                self._logins = registered.logins
            fleet = [self._prepare(device) for device in self.devices]
            for running in fleet:
                self._attach_faults(running)
            try:
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
                    self._publishing = asyncio.create_task(self._run_fleet(fleet))
                    try:
                        await self._publishing
                    except asyncio.CancelledError:
                        if not self._stop_requested or _being_cancelled():
                            raise
                        await asyncio.gather(*(self._release_held(running) for running in fleet))
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
            self._endpoint(device.device_id),
            self._client_id(device.device_id),
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
            if refused_for_good(client) and not (running.connecting or running.closing):
                # gmqtt's own reconnect was refused and it stopped; firmware tries again.
                running.relogin = asyncio.ensure_future(self._relogin(running))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        return running

    def _endpoint(self, device_id: str) -> MqttEndpoint:
        """The node this device reaches (a cluster's devices are spread over its nodes by
        id), logged in as itself when it has a login of its own."""
        nodes = self.settings.mqtt_endpoints
        node = nodes[stable_key(device_id, "node") % len(nodes)]
        login = self._logins.get(device_id)
        if login is None:
            identity = self.settings.mqtt_as(self.settings.simulator)
            return node.model_copy(
                update={"username": identity.username, "password": identity.password}
            )
        return node.model_copy(update={"username": login.username, "password": login.password})

    def _client_id(self, device_id: str) -> str:
        """A device logged in as itself uses its id (the city edge requires it, and it keeps
        devices' sessions apart); stand-ins for many devices a prefix of their own."""
        if device_id in self._logins:
            return device_id
        return f"{self.settings.simulator.client_id_prefix}-{device_id}"

    async def _run_fleet(self, fleet: list[_Running]) -> None:
        """Every device connects, paced with the rest, and publishes as soon as it is
        connected, as firmware does: a device still waiting for its CONNACK holds back no
        other. A first attempt that finds nothing listening fails the run."""
        try:
            async with asyncio.TaskGroup() as group:
                for running in fleet:
                    group.create_task(self._run_device(running))
        except* ConnectionRefusedError as refused:
            endpoint = self.settings.mqtt_as(self.settings.simulator)
            first = refused.exceptions[0]
            self.stats.errors += len(refused.exceptions)
            raise SimulationError(
                f"devices could not connect to {endpoint.host}:{endpoint.port}; "
                f"first error: {first!r}"
            ) from first

    async def _run_device(self, running: _Running) -> None:
        await self._connect_device(running, first=True)
        if not self._stop_requested:
            await self._publish_device(running)

    async def _connect_device(self, running: _Running, *, first: bool, attempt: int = 0) -> None:
        """Connect, paced with the rest of the fleet, retrying a refused or failed CONNECT
        with backoff until it is accepted or the simulation stops. Only a first attempt that
        finds nothing listening fails: that is a wrong address, not a busy broker."""
        simulator = self.settings.simulator
        running.connecting = True
        try:
            while not self._stop_requested:
                try:
                    async with self._pacer:
                        if self._stop_requested:  # stopped while waiting for its turn
                            return
                        async with asyncio.timeout(simulator.connect_attempt_timeout_s):
                            await connect(running.client, self._endpoint(running.device.device_id))
                    return
                except ConnectionRefusedError:
                    if first and attempt == 0:
                        raise
                    self._connect_failed(running, "failures", attempt)
                except MQTTConnectError as exc:
                    self._connect_failed(running, "refusals", attempt, exc)
                except OSError as exc:  # no CONNACK in time (TimeoutError), connection lost
                    self._connect_failed(running, "failures", attempt, exc)
                with contextlib.suppress(Exception):
                    await running.client.disconnect()
                await self._pause(
                    backoff_delay(
                        attempt,
                        simulator.connect_backoff_s,
                        simulator.connect_backoff_max_s,
                        self._jitter,
                    )
                )
                attempt += 1
        finally:
            running.connecting = False

    def _connect_failed(
        self, running: _Running, what: str, attempt: int, exc: BaseException | None = None
    ) -> None:
        if what == "refusals":
            self.stats.connect_refusals += 1
        else:
            self.stats.connect_failures += 1
        log.warning(
            "device could not connect; retrying after a backoff",
            device_id=running.device.device_id,
            attempt=attempt + 1,
            error=repr(exc),
        )

    async def _relogin(self, running: _Running) -> None:
        """A device whose reconnect the broker refused logs in again after a backoff."""
        self.stats.connect_refusals += 1
        log.warning("device's reconnect was refused; retrying", device_id=running.device.device_id)
        simulator = self.settings.simulator
        running.connecting = True
        await self._pause(
            backoff_delay(
                0, simulator.connect_backoff_s, simulator.connect_backoff_max_s, self._jitter
            )
        )
        await self._connect_device(running, first=False, attempt=1)

    async def _pause(self, delay_s: float) -> None:
        """Sleep ``delay_s``, or less if the simulation is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay_s)

    def _attach_faults(self, running: _Running) -> None:
        plan = self.faults
        model = running.stream.model
        if isinstance(model, EnergyModel):
            # Resets are drawn per timestamp, so setting the rate before the first reading is
            # the same as building the model with it.
            model.reset_rate = plan.rate(FaultMode.METER_RESET)
        if plan.active:
            running.faults = DeviceFaults(
                plan,
                seed=self.plan.seed,
                device_id=running.device.device_id,
                kind=running.device.kind,
                batched=self.plan.batch_size > 1,
                counts=self.stats.faults,
            )

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
            self._count_meter_resets(running, readings)
            if running.faults is None:
                payload = orjson.dumps(readings if batched else readings[0])
                await self._execute(running, Send(payload, readings, []))
            else:
                for step in running.faults.shape(readings, datetime.now(UTC)):
                    await self._execute(running, step)
            self.stats.readings_sent += size
            if remaining is not None:
                remaining -= size
            due += plan.message_interval_s
        if running.faults is not None:
            for step in running.faults.finish():
                await self._execute(running, step)

    async def _release_held(self, running: _Running) -> None:
        """On a stop, a device still sends what its faults held back (a gap's backlog, late
        readings): they were counted as sent. One caught mid-dropout cannot, and they are taken
        off the count instead."""
        if running.faults is None:
            return
        held = [step for step in running.faults.finish() if isinstance(step, Send)]
        if not running.online:
            lost = sum(len(step.good) + len(step.bad) for step in held if not step.duplicate)
            self.stats.readings_sent -= lost
            log.warning("stopped while offline: held readings not sent", readings=lost)
            return
        for step in held:
            await self._execute(running, step)

    def _count_meter_resets(self, running: _Running, readings: list[dict[str, Any]]) -> None:
        resets = running.stream.meter_resets
        new = resets[running.meter_resets_seen :]
        if not new:
            return
        self.stats.faults.injected[FaultMode.METER_RESET.value] += len(new)
        running.meter_resets_seen = len(resets)
        if self.record:
            reset_ts = {format_ts(EPOCH + timedelta(milliseconds=ms)) for ms in new}
            device = running.device
            self.faulty.extend(
                (device.kind, device.device_id, FaultMode.METER_RESET, reading)
                for reading in readings
                if reading["ts"] in reset_ts
            )

    async def _execute(self, running: _Running, step: Step) -> None:
        if isinstance(step, Drop):
            await self._drop_connection(running, step.offline_s)
            return
        await publish_when_possible(running.client, running.telemetry, step.payload)
        self.stats.messages_sent += 1
        if self.record and not step.duplicate:
            device = running.device
            self.published.extend((device.kind, device.device_id, r) for r in step.good)
            self.faulty.extend((device.kind, device.device_id, mode, r) for mode, r in step.bad)

    async def _drop_connection(self, running: _Running, offline_s: float) -> None:
        """Drop off the network as a device losing power or signal does, so the broker
        publishes the Last Will; come back after ``offline_s``.

        The drop is MQTT 5's DISCONNECT with reason "disconnect with Will message", which the
        broker treats as a lost connection. Killing the socket instead races gmqtt's own
        reconnect, which then resends readings already delivered: duplicates nobody injected.
        """
        client = running.client
        # Nothing in flight: a resent reading would be a duplicate nobody injected.
        await wait_published(client)
        await client.disconnect(reason_code=DISCONNECT_WITH_WILL)
        await asyncio.sleep(offline_s)
        await self._connect_device(running, first=False)

    async def _close(self, running: _Running) -> None:
        """Wait for the broker to acknowledge everything, say ``offline``, disconnect."""
        client = running.client
        running.closing = True
        if running.relogin is not None:
            running.relogin.cancel()
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
