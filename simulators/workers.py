"""Running a simulation until it ends or is stopped, in this process or split across several.

One asyncio process holds a few thousand device connections before its single core is the
limit; ``run_sharded`` deals the fleet to worker processes (device ``i`` to worker
``i % processes``), each a full simulation of its share, and adds up their counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from types import FrameType
from typing import Final, Protocol

import structlog
import uvloop

from core.config import get_settings
from core.logging import configure_logging
from devices.schemas import MqttLogin
from simulators.faults import FaultPlan
from simulators.progress import log_progress, show_live
from simulators.schemas import SimDevice, SimulationStats
from simulators.service import Simulation, SimulationError

log = structlog.get_logger(__name__)


class EventLike(Protocol):
    """A flag another process may set (multiprocessing's Event)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


async def run_until_stopped(
    simulation: Simulation,
    *,
    register: bool,
    live: bool,
    log_every_s: float,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    stop_requested: EventLike | None = None,
) -> None:
    """Run with a progress display; the first stop signal (or ``stop_requested`` being set)
    shuts the devices down cleanly, a second signal aborts."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        if simulation.stopping:
            log.warning("second stop signal: aborting without a clean shutdown")
            if task is not None:
                task.cancel()
            return
        log.info("stop requested; shutting the devices down cleanly")
        simulation.stop()

    async def stop_when_requested(event: EventLike) -> None:
        await asyncio.to_thread(event.wait)
        if not simulation.stopping:
            log.info("stop requested; shutting the devices down cleanly")
            simulation.stop()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    watcher = None
    if stop_requested is not None:
        watcher = asyncio.create_task(stop_when_requested(stop_requested))
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
        if stop_requested is not None and watcher is not None:
            stop_requested.set()  # this worker's own flag: lets the waiting thread go
            await watcher
        for sig in signals:
            loop.remove_signal_handler(sig)


@dataclass(frozen=True)
class ShardJob:
    """What one worker process runs: its devices and the plan shared by all workers."""

    worker: int
    devices: list[SimDevice]
    rate_hz: float
    count: int | None
    seed: int
    batch_size: int
    start: datetime
    time_step_s: float
    faults: FaultPlan
    log_every_s: float
    # Each device's broker login when the parent registered them; else the simulator's own.
    logins: dict[str, MqttLogin] = field(default_factory=dict)


def deal(fleet: Sequence[SimDevice], processes: int) -> list[list[SimDevice]]:
    """Device ``i`` to worker ``i % processes``: every kind and district in every worker."""
    return [list(fleet[worker::processes]) for worker in range(processes)]


def _work(job: ShardJob, results: Connection, stop_requested: EventLike) -> None:
    """A worker process: the terminal's Ctrl-C reaches the whole process group, so workers
    ignore SIGINT. Their parent asks them to stop by setting ``stop_requested`` (a worker still
    starting up sees it once it runs; a signal then would kill it unreported), and aborts them
    with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="simulator")
    structlog.contextvars.bind_contextvars(worker=job.worker)
    simulation = Simulation(
        settings,
        job.devices,
        rate_hz=job.rate_hz,
        count=job.count,
        seed=job.seed,
        batch_size=job.batch_size,
        start=job.start,
        time_step_s=job.time_step_s,
        faults=job.faults,
        logins=job.logins,
    )
    try:
        uvloop.run(
            run_until_stopped(
                simulation,
                register=False,
                live=False,
                log_every_s=job.log_every_s,
                signals=(signal.SIGTERM,),
                stop_requested=stop_requested,
            )
        )
    except SimulationError as exc:  # counted; any other failure ends the worker unreported
        log.error("worker failed", error=str(exc))
        simulation.stats.errors += 1
    except asyncio.CancelledError:
        simulation.stats.errors += 1
    results.send(simulation.stats)
    results.close()


def add_up(shares: Sequence[SimulationStats]) -> SimulationStats:
    """The counters of a run from those of its workers."""
    total = SimulationStats()
    for stats in shares:
        total.devices += stats.devices
        total.connected += stats.connected
        total.messages_sent += stats.messages_sent
        total.readings_sent += stats.readings_sent
        total.errors += stats.errors
        total.connect_refusals += stats.connect_refusals
        total.connect_failures += stats.connect_failures
        total.faults.injected.update(stats.faults.injected)
        total.faults.duplicate_readings += stats.faults.duplicate_readings
        total.faults.backlog_readings += stats.faults.backlog_readings
    return total


def run_sharded(jobs: Sequence[ShardJob]) -> SimulationStats:
    """Run each job in a process of its own until all end; the first SIGINT or SIGTERM here
    asks every worker to stop cleanly, a second one aborts them with SIGTERM. A worker that
    dies without reporting counts as an error."""
    context = multiprocessing.get_context("spawn")  # no forked event loop or sockets
    stops = [context.Event() for _ in jobs]
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if not all(stop.is_set() for stop in stops):
            log.info("stop requested; passing it on to the workers", workers=len(jobs))
            for stop in stops:
                stop.set()
            return
        log.warning("second stop signal: aborting the workers", workers=len(workers))
        for process, _ in workers:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    log.info(
        "simulator workers starting",
        workers=len(jobs),
        devices=sum(len(job.devices) for job in jobs),
    )
    for job, stop in zip(jobs, stops, strict=True):
        receiving, sending = context.Pipe(duplex=False)
        worker = context.Process(target=_work, args=(job, sending, stop), name=f"sim-{job.worker}")
        worker.start()
        sending.close()
        workers.append((worker, receiving))
    shares: list[SimulationStats] = []
    try:
        for process, receiving in workers:
            try:
                shares.append(receiving.recv())
            except EOFError:
                shares.append(SimulationStats(errors=1))
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return add_up(shares)
