"""``python -m simulators run``: the simulated city, until its readings are sent or Ctrl-C.

Reads the broker and API addresses from the settings (``MQTT_URL``,
``ALATAU_SIMULATOR__API_URL``). The first SIGINT or SIGTERM stops publishing and shuts every
device down cleanly (all readings acknowledged, retained ``offline``); a second one aborts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
import typer
import uvloop

from core.config import get_settings
from core.logging import configure_logging
from simulators.fleet import build_fleet
from simulators.progress import log_progress, show_live
from simulators.registry import RegistrationError
from simulators.service import Simulation, SimulationError

log = structlog.get_logger(__name__)

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


async def _run(simulation: Simulation, *, register: bool, live: bool, log_every_s: float) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:
        if simulation.stopping:
            log.warning("second stop signal: aborting without a clean shutdown")
            if task is not None:
                task.cancel()
            return
        log.info("stop requested; shutting the devices down cleanly")
        simulation.stop()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    done = asyncio.Event()
    reporter = asyncio.create_task(
        show_live(simulation.stats, simulation.plan, done)
        if live
        else log_progress(simulation.stats, done, every_s=log_every_s)
    )
    try:
        await simulation.run(register=register)
    finally:
        done.set()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        for sig in signals:
            loop.remove_signal_handler(sig)


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
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="register the devices via the API")
    ] = True,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="ALATAU_SIMULATOR_API_KEY", help="bearer key for registration"),
    ] = None,
    log_every: Annotated[
        float, typer.Option(min=0.1, help="seconds between progress log lines (no TTY)")
    ] = 10.0,
) -> None:
    """Connect the fleet, publish readings at RATE per device, and shut down cleanly."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="simulator")
    step_s = accel / rate
    try:
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
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    live = sys.stdout.isatty()
    try:
        uvloop.run(_run(simulation, register=register, live=live, log_every_s=log_every))
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
        )
    if count is not None and stats.errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
