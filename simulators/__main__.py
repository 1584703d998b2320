"""``python -m simulators run``: the simulated city, until its readings are sent or Ctrl-C.

Reads the broker and API addresses from the settings (``MQTT_URL``,
``ALATAU_SIMULATOR__API_URL``). The first SIGINT or SIGTERM stops publishing and shuts every
device down cleanly (all readings acknowledged, retained ``offline``); a second one aborts.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
import typer
import uvloop

from core.config import get_settings
from core.logging import configure_logging
from devices.contract import Kind
from devices.schemas import MqttLogin
from simulators.faults import FaultMode, FaultPlan
from simulators.fleet import build_fleet
from simulators.registry import RegistrationError, register_devices
from simulators.replay import Replay, load_recording
from simulators.service import Simulation, SimulationError
from simulators.workers import ShardJob, deal, run_sharded, run_until_stopped

log = structlog.get_logger(__name__)

# Options both commands take.
RegisterOption = Annotated[
    bool, typer.Option("--register/--no-register", help="register the devices via the API")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="ALATAU_SIMULATOR_API_KEY", help="bearer key for registration"),
]
LogEveryOption = Annotated[
    float, typer.Option(min=0.1, help="seconds between progress log lines (no TTY)")
]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """Simulated street sensors of Alatau City publishing over MQTT."""


def _start(start: datetime | None, accel: float, count: int | None, step_s: float) -> datetime:
    """With time acceleration and a known length, end the simulated window at about now, so
    readings are not rejected for lying in the future."""
    if start is not None:
        return start if start.tzinfo is not None else start.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if accel > 1 and count is not None:
        return now - timedelta(seconds=count * step_s)
    if accel > 1:
        log.warning(
            "accelerated time without --count runs ahead of the clock; ingest rejects "
            "readings more than 5 minutes in the future",
            accel=accel,
        )
    return now


@app.command()
def run(
    *,
    devices_per_kind: Annotated[
        int, typer.Option(min=1, help="devices of each kind (traffic, energy, air)")
    ] = 70,
    rate: Annotated[float, typer.Option(min=0.0001, help="readings per device per second")] = 1.0,
    seed: Annotated[int, typer.Option(help="same seed, start and step: same readings")] = 42,
    batch_size: Annotated[
        int, typer.Option(min=1, max=1000, help="readings per message (>1: JSON arrays)")
    ] = 1,
    count: Annotated[
        int | None, typer.Option(min=1, help="readings per device, then stop (default: forever)")
    ] = None,
    accel: Annotated[
        float, typer.Option(min=0.001, help="simulated seconds per wall-clock second")
    ] = 1.0,
    start: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
            help="ts of the first reading (default: now; UTC unless an offset is given)",
        ),
    ] = None,
    prefix: Annotated[str, typer.Option(help="device ids are PREFIX-district-kind-NNNN")] = "sim",
    register: RegisterOption = True,
    api_key: ApiKeyOption = None,
    log_every: LogEveryOption = 10.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="faulty firmware, repeatable: MODE=RATE (per reading or per message; modes: "
            + ", ".join(mode.value for mode in FaultMode)
            + ") or PARAMETER=VALUE (gap_messages, burst_messages, late_messages, skew_s, "
            "dropout_s)"
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="worker processes sharing the fleet (one core holds a few thousand)"
        ),
    ] = 1,
) -> None:
    """Connect the fleet, publish readings at RATE per device, and shut down cleanly."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="simulator")
    step_s = accel / rate
    try:
        faults = FaultPlan.parse(fault or [])
        fleet = build_fleet(devices_per_kind, seed=seed, prefix=prefix)
        simulation = Simulation(
            settings,
            fleet,
            rate_hz=rate,
            count=count,
            seed=seed,
            batch_size=batch_size,
            start=_start(start, accel, count, step_s),
            time_step_s=step_s,
            api_key=api_key,
            faults=faults,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if processes > 1:
        _run_processes(
            simulation, processes, register=register, api_key=api_key, log_every=log_every
        )
        return
    live = sys.stdout.isatty()
    try:
        uvloop.run(
            run_until_stopped(simulation, register=register, live=live, log_every_s=log_every)
        )
    except (RegistrationError, SimulationError) as exc:
        log.error("simulator failed", error=str(exc))
        raise typer.Exit(1) from exc
    except asyncio.CancelledError:
        raise typer.Exit(130) from None
    stats = simulation.stats
    if not live:
        log.info(
            "simulator finished",
            messages=stats.messages_sent,
            readings=stats.readings_sent,
            errors=stats.errors,
            faults=dict(stats.faults.injected),
        )
    if count is not None and stats.errors:
        raise typer.Exit(1)


def _run_processes(
    simulation: Simulation, processes: int, *, register: bool, api_key: str | None, log_every: float
) -> None:
    """The same plan, its fleet dealt to ``processes`` workers; registered once, from here."""
    settings = simulation.settings
    logins: dict[str, MqttLogin] = {}
    if register:
        try:
            registered = uvloop.run(
                register_devices(
                    settings.simulator.api_url,
                    simulation.devices,
                    api_key=api_key,
                    metadata=simulation.registry_metadata(),
                )
            )
            logins = registered.logins
        except RegistrationError as exc:
            log.error("simulator failed", error=str(exc))
            raise typer.Exit(1) from exc
    plan = simulation.plan
    jobs = [
        ShardJob(
            worker=worker,
            devices=devices,
            rate_hz=plan.rate_hz,
            count=plan.count,
            seed=plan.seed,
            batch_size=plan.batch_size,
            start=plan.start,
            time_step_s=plan.time_step_s,
            faults=simulation.faults,
            log_every_s=log_every,
            logins={
                device.device_id: logins[device.device_id]
                for device in devices
                if device.device_id in logins
            },
        )
        for worker, devices in enumerate(deal(simulation.devices, processes))
        if devices
    ]
    stats = run_sharded(jobs)
    log.info(
        "simulator finished",
        workers=len(jobs),
        messages=stats.messages_sent,
        readings=stats.readings_sent,
        errors=stats.errors,
        faults=dict(stats.faults.injected),
    )
    if stats.errors:
        raise typer.Exit(1)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or CSV.gz")],
    *,
    kind: Annotated[Kind, typer.Option(help="the devices' kind")],
    metric: Annotated[str, typer.Option(help="the metric the value column holds")],
    prefix: Annotated[
        str, typer.Option(help="device id (one device) or PREFIX-STATION (one per station)")
    ] = "replay",
    speed: Annotated[
        float, typer.Option(min=0, help="recorded seconds per wall second; 0: as fast as possible")
    ] = 1.0,
    ts_column: Annotated[
        str | None, typer.Option(help="default: timestamp, datetime_utc...")
    ] = None,
    value_column: Annotated[str | None, typer.Option(help="default: value, value_ugm3")] = None,
    station_column: Annotated[
        str | None, typer.Option(help="one device per value of it (default: station_id)")
    ] = None,
    single_device: Annotated[
        bool, typer.Option("--single-device", help="one device for the whole file")
    ] = False,
    last_days: Annotated[
        float | None, typer.Option(min=0, help="only the last DAYS of the recording")
    ] = None,
    naive_tz: Annotated[
        str, typer.Option(help="time zone of timestamps without an offset")
    ] = "UTC",
    register: RegisterOption = True,
    api_key: ApiKeyOption = None,
    log_every: LogEveryOption = 10.0,
) -> None:
    """Replay a recording through MQTT, one device per station, ending now (spacing kept)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="simulator")
    try:
        recording = load_recording(
            file,
            kind=kind,
            metric=metric,
            prefix=prefix,
            ts_column=ts_column,
            value_column=value_column,
            station_column=station_column,
            single_device=single_device,
            naive_tz=ZoneInfo(naive_tz),
            last=timedelta(days=last_days) if last_days is not None else None,
        )
        player = Replay(settings, recording, speed=speed, api_key=api_key)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    log.info(
        "replaying",
        file=str(file),
        devices=len(recording.devices),
        rows=recording.rows,
        duration_s=round(player.duration_s, 1),
    )
    live = sys.stdout.isatty()
    try:
        uvloop.run(run_until_stopped(player, register=register, live=live, log_every_s=log_every))
    except (RegistrationError, SimulationError) as exc:
        log.error("replay failed", error=str(exc))
        raise typer.Exit(1) from exc
    except asyncio.CancelledError:
        raise typer.Exit(130) from None
    stats = player.stats
    log.info("replay finished", messages=stats.messages_sent, errors=stats.errors)
    if stats.errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
