"""How a running simulation reports itself: a live panel on a terminal, log lines elsewhere."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.schemas import SimulationPlan, SimulationStats

log = structlog.get_logger(__name__)


@dataclass
class _Rate:
    """Readings per second since the previous look."""

    readings: int = 0
    at: float = 0.0

    def update(self, readings: int) -> float:
        now = time.monotonic()
        elapsed = now - self.at
        rate = (readings - self.readings) / elapsed if self.at and elapsed > 0 else 0.0
        self.readings, self.at = readings, now
        return rate


async def _tick(done: asyncio.Event, every_s: float) -> bool:
    """Wait ``every_s`` seconds or until ``done``; True while the run goes on."""
    try:
        await asyncio.wait_for(done.wait(), timeout=every_s)
    except TimeoutError:
        return True
    return False


def _panel(
    stats: SimulationStats, plan: SimulationPlan, rate: float, started: float, final: bool
) -> Table:
    elapsed = int(time.monotonic() - started)
    title = "Alatau simulated city" + (" (stopped)" if final else "")
    table = Table(title=title, show_header=False, min_width=48)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("devices connected", f"{stats.connected} / {stats.devices}")
    table.add_row("messages sent", f"{stats.messages_sent:,}")
    table.add_row("readings sent", f"{stats.readings_sent:,}")
    table.add_row("rate", f"{rate:,.1f} readings/s")
    table.add_row("errors", f"[red]{stats.errors}[/red]" if stats.errors else "0")
    for mode, injected in sorted(stats.faults.injected.items()):
        table.add_row(f"fault: {mode}", f"{injected:,}")
    table.add_row("elapsed", f"{elapsed // 3600:02d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}")
    table.add_row("plan", f"{plan.rate_hz:g} Hz x{plan.batch_size}, time x{plan.acceleration:g}")
    return table


async def show_live(
    stats: SimulationStats,
    plan: SimulationPlan,
    done: asyncio.Event,
    *,
    console: Console | None = None,
    every_s: float = 0.5,
) -> None:
    """A panel redrawn in place until ``done`` is set, left on screen with the final counts."""
    started = time.monotonic()
    rate = _Rate()
    rate.update(stats.readings_sent)
    current = 0.0
    with Live(
        _panel(stats, plan, current, started, final=False),
        console=console or Console(),
        auto_refresh=False,
    ) as live:
        while await _tick(done, every_s):
            current = rate.update(stats.readings_sent)
            live.update(_panel(stats, plan, current, started, final=False), refresh=True)
        live.update(_panel(stats, plan, current, started, final=True), refresh=True)


async def log_progress(stats: SimulationStats, done: asyncio.Event, *, every_s: float) -> None:
    """A structured progress line every ``every_s`` seconds until ``done`` is set."""
    rate = _Rate()
    rate.update(stats.readings_sent)
    while await _tick(done, every_s):
        log.info(
            "simulator progress",
            connected=stats.connected,
            devices=stats.devices,
            messages=stats.messages_sent,
            readings=stats.readings_sent,
            rate=round(rate.update(stats.readings_sent), 1),
            errors=stats.errors,
            connect_refusals=stats.connect_refusals,
            connect_failures=stats.connect_failures,
            faults=dict(stats.faults.injected),
        )
