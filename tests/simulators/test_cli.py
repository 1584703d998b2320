"""``python -m simulators run`` as ``make run`` starts it: a process against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from core.config import Settings
from simulators.__main__ import app
from simulators.fleet import build_fleet
from simulators.models import DeviceStream
from stack.broker_auth import login_environment
from tests.simulators.collector import Collector, retained_statuses
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


async def start_simulator(
    settings: Settings, unique: str, *args: str
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "MQTT_URL": settings.mqtt_url,
        **login_environment(settings),
        "ALATAU_LOG_FORMAT": "json",
        "ALATAU_LOG_LEVEL": "INFO",
        "ALATAU_SIMULATOR__CLIENT_ID_PREFIX": f"test-cli-{unique}",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "run",
        "--no-register",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def log_events(stderr: bytes) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            events[event["event"]] = event
    return events


async def test_a_counted_run_publishes_the_deterministic_readings_and_exits(
    settings: Settings, unique: str
) -> None:
    prefix = f"k{unique}"
    fleet = build_fleet(1, seed=4, prefix=prefix)
    async with Collector(settings, prefix, ("alatau/+/+/telemetry",)) as collector:
        process = await start_simulator(
            settings,
            unique,
            *("--devices-per-kind", "1", "--count", "4", "--rate", "20", "--seed", "4"),
            *("--accel", "60", "--start", "2026-11-21T10:00:00+00:00", "--prefix", prefix),
            *("--batch-size", "2", "--log-every", "0.1"),
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        await collector.wait_for_readings(4 * len(fleet))
        await collector.settle()
    received = collector.telemetry()
    for device in fleet:
        stream = DeviceStream(device, seed=4, start=START, step_s=3.0)
        assert received[device.device_id] == stream.take(4)
    events = log_events(stderr)
    assert events["simulator finished"]["readings"] == 4 * len(fleet)
    assert events["simulator finished"]["errors"] == 0
    assert "simulator progress" in events


async def test_sigterm_stops_cleanly_and_loses_nothing(settings: Settings, unique: str) -> None:
    prefix = f"t{unique}"
    fleet = build_fleet(1, seed=6, prefix=prefix)
    async with Collector(settings, prefix, ("alatau/+/+/telemetry",)) as collector:
        process = await start_simulator(
            settings,
            unique,
            *("--devices-per-kind", "1", "--rate", "50", "--seed", "6", "--prefix", prefix),
            *("--start", "2026-11-21T10:00:00+00:00"),
        )
        await collector.wait_for_readings(10 * len(fleet), timeout_s=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        sent = log_events(stderr)["simulator finished"]["readings"]
        await collector.wait_for_readings(sent)
        await collector.settle()
        assert collector.reading_count() == sent
    received = collector.telemetry()
    for device in fleet:
        readings = received[device.device_id]
        stream = DeviceStream(device, seed=6, start=START, step_s=0.02)
        assert readings == stream.take(len(readings))
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }


def test_the_command_line_explains_itself_and_refuses_bad_options() -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["run", "--help"]).output
    for option in ("--devices-per-kind", "--rate", "--count", "--accel", "--no-register"):
        assert option in help_text
    assert runner.invoke(app, ["run", "--batch-size", "2000"]).exit_code == 2
    assert runner.invoke(app, ["run", "--rate", "0"]).exit_code == 2


async def test_faults_are_injected_from_the_command_line_and_counted(
    settings: Settings, unique: str
) -> None:
    prefix = f"q{unique}"
    fleet = build_fleet(1, seed=8, prefix=prefix)
    async with Collector(settings, prefix, ("alatau/+/+/telemetry",)) as collector:
        process = await start_simulator(
            settings,
            unique,
            *("--devices-per-kind", "1", "--count", "30", "--rate", "50", "--seed", "8"),
            *("--accel", "3000", "--prefix", prefix),
            *("--fault", "malformed_json=0.2", "--fault", "duplicate=0.2"),
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        finished = log_events(stderr)["simulator finished"]
        injected = finished["faults"]
        assert injected["malformed_json"] > 0
        assert injected["duplicate"] > 0
        sent = finished["messages"]
        assert sent == 30 * len(fleet) + injected["duplicate"]
        await eventually(
            lambda: asyncio.sleep(0, len(collector.telemetry_messages())), lambda n: n >= sent
        )
    broken = 0
    for message in collector.telemetry_messages():
        try:
            json.loads(message.payload)
        except ValueError:
            broken += 1
    assert broken == injected["malformed_json"]


def test_an_unknown_fault_is_refused() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["run", "--fault", "smoke=0.1"]).exit_code == 2
    assert runner.invoke(app, ["run", "--fault", "late=2"]).exit_code == 2


async def test_two_processes_share_the_fleet_and_publish_what_one_would(
    settings: Settings, unique: str
) -> None:
    prefix = f"p{unique}"
    fleet = build_fleet(34, seed=5, prefix=prefix)  # 102 devices, 51 per worker
    async with Collector(settings, prefix, ("alatau/+/+/telemetry",)) as collector:
        process = await start_simulator(
            settings,
            unique,
            *("--devices-per-kind", "34", "--count", "3", "--rate", "10", "--seed", "5"),
            *("--accel", "600", "--start", "2026-11-21T10:00:00+00:00", "--prefix", prefix),
            *("--processes", "2"),
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        await collector.wait_for_readings(3 * len(fleet))
        await collector.settle()
    finished = log_events(stderr)["simulator finished"]
    assert (finished["workers"], finished["readings"], finished["errors"]) == (2, 3 * 102, 0)
    received = collector.telemetry()
    assert set(received) == {device.device_id for device in fleet}
    for device in fleet:
        stream = DeviceStream(device, seed=5, start=START, step_s=60.0)
        assert received[device.device_id] == stream.take(3)
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }


async def test_sigterm_while_the_workers_start_still_stops_cleanly(
    settings: Settings, unique: str
) -> None:
    """A stop that comes before a worker process has put its handler in place (it is still
    importing) must shut that worker down like any other, not kill it unreported."""
    prefix = f"e{unique}"
    process = await start_simulator(
        settings,
        unique,
        *("--devices-per-kind", "2", "--rate", "20", "--seed", "7", "--prefix", prefix),
        *("--processes", "2"),
    )
    assert process.stderr is not None
    early: list[bytes] = []
    while b"simulator workers starting" not in (line := await process.stderr.readline()):
        assert line, b"".join(early).decode()
        early.append(line)
    process.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = b"".join([*early, line, rest])
    assert process.returncode == 0, stderr.decode()
    assert log_events(stderr)["simulator finished"]["errors"] == 0


async def test_sigterm_stops_every_worker_cleanly(settings: Settings, unique: str) -> None:
    prefix = f"w{unique}"
    fleet = build_fleet(2, seed=6, prefix=prefix)
    async with Collector(settings, prefix, ("alatau/+/+/telemetry",)) as collector:
        process = await start_simulator(
            settings,
            unique,
            *("--devices-per-kind", "2", "--rate", "20", "--seed", "6", "--prefix", prefix),
            *("--processes", "2"),
        )
        # Every worker publishing (one may take seconds to start on a loaded machine).
        await collector.wait_for_devices({device.device_id for device in fleet}, timeout_s=60)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        finished = log_events(stderr)["simulator finished"]
        assert finished["errors"] == 0
        await collector.wait_for_readings(finished["readings"])
        await collector.settle()
        assert collector.reading_count() == finished["readings"]
    assert set(collector.telemetry()) == {device.device_id for device in fleet}
    assert await retained_statuses(settings, prefix, len(fleet)) == {
        device.device_id: "offline" for device in fleet
    }
