"""The simulation against the real broker: what a subscriber receives is exactly what was
published, and every device ends ``offline`` on its retained status topic."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from core.config import Settings
from devices.contract import Kind
from devices.schemas import READING_MODELS
from simulators.faults import FaultPlan
from simulators.fleet import build_fleet
from simulators.models import DeviceStream
from simulators.schemas import SimDevice
from simulators.service import Simulation, SimulationError
from tests.simulators.collector import Collector, retained_statuses
from tests.simulators.proxy import CuttableProxy
from tests.support import eventually

START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
TOPICS = ("alatau/+/+/telemetry", "alatau/+/+/status")


def sim_settings(settings: Settings, unique: str) -> Settings:
    return settings.model_copy(
        update={
            "simulator": settings.simulator.model_copy(
                update={"client_id_prefix": f"test-sim-{unique}"}
            )
        }
    )


def recorded(simulation: Simulation) -> dict[str, list[dict[str, Any]]]:
    readings: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, device_id, reading in simulation.published:
        readings[device_id].append(reading)
    return dict(readings)


def by_ts(readings: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {device: sorted(items, key=lambda r: r["ts"]) for device, items in readings.items()}


@pytest.mark.parametrize("batch_size", [1, 5])
async def test_the_subscriber_receives_exactly_the_recorded_readings(
    settings: Settings, unique: str, batch_size: int
) -> None:
    prefix = f"s{unique}"
    fleet = build_fleet(2, seed=3, prefix=prefix)
    async with Collector(settings, prefix, TOPICS) as collector:
        simulation = Simulation(
            sim_settings(settings, unique),
            fleet,
            rate_hz=40.0,
            count=5,
            seed=3,
            batch_size=batch_size,
            start=START,
            time_step_s=60.0,
            record=True,
        )
        stats = await simulation.run()
        assert len(simulation.published) == 5 * len(fleet)
        await collector.wait_for_readings(5 * len(fleet))
        await collector.settle()  # anything more would have arrived by now

        received = collector.telemetry()
        assert by_ts(received) == by_ts(recorded(simulation))
        assert len(collector.telemetry_messages()) == len(fleet) * (5 // batch_size)
        for message in collector.telemetry_messages():
            assert message.payload.startswith(b"[" if batch_size > 1 else b"{")
        assert collector.statuses() == {device.device_id: ["online", "offline"] for device in fleet}

    assert stats.devices == len(fleet)
    assert stats.readings_sent == 5 * len(fleet)
    assert stats.messages_sent == len(fleet) * (5 // batch_size)
    assert stats.errors == 0
    assert stats.connected == 0
    for kind, device_id, reading in simulation.published:
        assert device_id.startswith(prefix)
        READING_MODELS[kind].model_validate(reading)
    first = recorded(simulation)[fleet[0].device_id]
    assert [r["ts"] for r in first] == [
        f"2026-11-21T10:0{minute}:00.000+00:00" for minute in range(5)
    ]
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }


async def test_batching_does_not_change_the_readings(settings: Settings, unique: str) -> None:
    fleet = build_fleet(1, seed=5, prefix=f"b{unique}")
    runs = []
    for batch_size in (1, 3):
        simulation = Simulation(
            sim_settings(settings, f"{unique}-{batch_size}"),
            fleet,
            rate_hz=50.0,
            count=7,
            seed=5,
            batch_size=batch_size,
            start=START,
            time_step_s=30.0,
            record=True,
        )
        await simulation.run()
        runs.append(sorted(simulation.published, key=lambda item: (item[1], item[2]["ts"])))
    assert runs[0] == runs[1]
    for device in fleet:
        stream = DeviceStream(device, seed=5, start=START, step_s=30.0)
        assert [r for _, d, r in runs[0] if d == device.device_id] == stream.take(7)


async def test_an_unbounded_run_stops_cleanly_without_losing_a_reading(
    settings: Settings, unique: str
) -> None:
    prefix = f"u{unique}"
    fleet = build_fleet(2, seed=9, prefix=prefix)
    async with Collector(settings, prefix, TOPICS) as collector:
        simulation = Simulation(
            sim_settings(settings, unique), fleet, rate_hz=100.0, seed=9, record=True
        )
        running = asyncio.create_task(simulation.run())
        await eventually(
            lambda: asyncio.sleep(0, simulation.stats.readings_sent),
            lambda n: n >= 10 * len(fleet),
        )
        assert simulation.stats.connected == len(fleet)
        simulation.stop()
        stats = await asyncio.wait_for(running, timeout=20)
        await collector.wait_for_readings(stats.readings_sent)
        await collector.settle()
        assert by_ts(collector.telemetry()) == by_ts(recorded(simulation))
        assert collector.statuses() == {device.device_id: ["online", "offline"] for device in fleet}
    assert stats.errors == 0
    assert stats.connected == 0
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }


async def test_a_stop_still_sends_what_faulty_firmware_held_back(
    settings: Settings, unique: str
) -> None:
    """Gaps and late readings hold readings back; stopped mid-run, a device sends them before it
    goes offline, so every reading counted as sent was published and none is missing."""
    prefix = f"h{unique}"
    fleet = build_fleet(2, seed=13, prefix=prefix)
    faults = FaultPlan.parse(["late=0.3", "offline_gap=0.1", "gap_messages=4"])
    async with Collector(settings, prefix, TOPICS) as collector:
        simulation = Simulation(
            sim_settings(settings, unique), fleet, rate_hz=50.0, seed=13, record=True,
            faults=faults,
        )  # fmt: skip
        running = asyncio.create_task(simulation.run())
        await eventually(
            lambda: asyncio.sleep(0, simulation.stats.readings_sent),
            lambda n: n >= 25 * len(fleet),
        )
        simulation.stop()
        stats = await asyncio.wait_for(running, timeout=20)
        published = recorded(simulation)
        assert sum(len(readings) for readings in published.values()) >= stats.readings_sent
        await collector.wait_for_readings(stats.readings_sent)
        await collector.settle()
        assert by_ts(collector.telemetry()) == by_ts(published)
    assert stats.faults.injected["late"] > 0
    for device in fleet:
        sent = sorted(r["ts"] for r in published[device.device_id])
        stream = DeviceStream(device, seed=13, start=simulation.plan.start, step_s=1 / 50.0)
        # No hole: what was published is the device's first readings, all of them.
        assert sent == [r["ts"] for r in stream.take(len(sent))]


async def test_a_dropped_connection_loses_no_reading(settings: Settings, unique: str) -> None:
    prefix = f"r{unique}"
    fleet = build_fleet(1, seed=11, prefix=prefix)
    broker = settings.mqtt
    async with (
        CuttableProxy(broker.host, broker.port) as proxy,
        Collector(settings, prefix, TOPICS) as collector,
    ):
        flaky = sim_settings(settings, unique).model_copy(
            update={"mqtt_url": f"mqtt://127.0.0.1:{proxy.port}"}
        )
        simulation = Simulation(
            flaky, fleet, rate_hz=50.0, count=150, seed=11, start=START, record=True
        )
        running = asyncio.create_task(simulation.run())
        await eventually(
            lambda: asyncio.sleep(0, simulation.stats.readings_sent),
            lambda n: n >= 40 * len(fleet),
        )
        proxy.cut()
        stats = await asyncio.wait_for(running, timeout=60)
        assert proxy.connections >= 2 * len(fleet)
        assert stats.errors == 0
        await collector.wait_for_readings(stats.readings_sent, timeout_s=30)
        # QoS 1 is at least once: a reading in flight at the cut may arrive twice; none is lost.
        received = {
            device_id: list({r["ts"]: r for r in readings}.values())
            for device_id, readings in collector.telemetry().items()
        }
        assert by_ts(received) == by_ts(recorded(simulation))
        for device in fleet:
            statuses = collector.statuses()[device.device_id]
            assert statuses.count("online") >= 2  # announced again after the reconnect
            assert statuses[-1] == "offline"
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }


async def test_a_cancelled_run_still_shuts_down_cleanly(settings: Settings, unique: str) -> None:
    prefix = f"c{unique}"
    fleet = build_fleet(1, seed=2, prefix=prefix)
    simulation = Simulation(sim_settings(settings, unique), fleet, rate_hz=50.0, record=True)
    running = asyncio.create_task(simulation.run())
    await eventually(
        lambda: asyncio.sleep(0, simulation.stats.readings_sent), lambda n: n >= len(fleet)
    )
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert simulation.stats.connected == 0
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }


async def test_devices_publish_out_of_lockstep(settings: Settings, unique: str) -> None:
    fleet = build_fleet(4, seed=1, prefix=f"j{unique}")
    simulation = Simulation(sim_settings(settings, unique), fleet, rate_hz=2.0, count=1)
    arrivals: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    async with Collector(settings, f"j{unique}", ("alatau/+/+/telemetry",)) as collector:
        original = collector._on_message

        def timed(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
            arrivals[topic.split("/")[2]] = loop.time()
            return original(client, topic, payload, qos, props)

        collector.client.on_message = timed
        await simulation.run()
        await collector.wait_for_readings(len(fleet))
    spread = max(arrivals.values()) - min(arrivals.values())
    assert spread > 0.05  # phases spread over one 0.5 s interval


async def test_an_unreachable_broker_fails_fast(settings: Settings, unique: str) -> None:
    unreachable = settings.model_copy(update={"mqtt_url": "mqtt://127.0.0.1:1"})
    simulation = Simulation(unreachable, build_fleet(1, seed=1, prefix=f"x{unique}"), count=1)
    with pytest.raises(SimulationError, match="could not connect"):
        await simulation.run()
    assert simulation.stats.connected == 0


@pytest.mark.parametrize(
    "options",
    [
        {"rate_hz": 0},
        {"batch_size": 0},
        {"batch_size": 1001},
        {"count": 0},
        {"time_step_s": 0.0001},
        {"time_step_s": 100_000.0},
    ],
)
def test_an_impossible_plan_is_refused(settings: Settings, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Simulation(settings, build_fleet(1, seed=1), **options)


def test_duplicate_devices_are_refused(settings: Settings) -> None:
    device = SimDevice(device_id="dup", kind=Kind.AIR, district="gate", lat=43.8, lon=77.0)
    with pytest.raises(ValueError, match="unique"):
        Simulation(settings, [device, device])


def test_the_default_start_is_now_with_whole_milliseconds(settings: Settings) -> None:
    before = datetime.now(UTC)
    simulation = Simulation(settings, build_fleet(1, seed=1), rate_hz=4.0)
    assert simulation.plan.start.microsecond % 1000 == 0
    assert (simulation.plan.start - before).total_seconds() < 1
    assert simulation.plan.time_step_s == 0.25
    assert simulation.plan.acceleration == 1.0
