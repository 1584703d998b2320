"""The progress display: the live panel shows the counts, fault counts included."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from simulators.progress import show_live
from simulators.schemas import SimulationPlan, SimulationStats


async def test_the_panel_shows_the_counts_and_the_injected_faults() -> None:
    stats = SimulationStats(devices=6, connected=6, messages_sent=1234, readings_sent=1500)
    stats.faults.injected.update({"malformed_json": 7, "dropout": 2})
    plan = SimulationPlan.resolve(rate_hz=2.0, batch_size=3)
    output = io.StringIO()
    done = asyncio.Event()
    done.set()
    await show_live(stats, plan, done, console=Console(file=output, width=80), every_s=0.01)
    text = output.getvalue()
    for expected in ("6 / 6", "1,234", "1,500", "fault: malformed_json", "fault: dropout"):
        assert expected in text
    assert "(stopped)" in text
