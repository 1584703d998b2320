"""``python -m rollups``: the rollup worker, until SIGINT or SIGTERM.

``python -m rollups backfill FROM TO`` instead recomputes every tier over [FROM, TO) once (after
a bulk load that bypassed ingest), and ``python -m rollups once`` rolls up what is dirty and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import datetime

import uvloop

from core.config import get_settings
from core.db import create_pool
from core.logging import configure_logging
from rollups import service


async def _work(stop: asyncio.Event) -> None:
    """The worker, from a database that may not be up yet until ``stop``."""
    settings = get_settings()
    pool = await service.open_pool(settings, stop)
    if pool is None:
        return
    try:
        await service.run(pool, settings.rollups, stop)
    finally:
        await pool.close()


async def _serve(command: str, start: datetime | None, end: datetime | None) -> None:
    if command == "run":
        # Handlers first: a stop must also end the wait for a database that is not up yet.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _work(stop)
        return
    # The one-shot commands are run by hand: a database that is away fails them at once.
    settings = get_settings()
    pool = await create_pool(settings, "rollups")
    try:
        if command == "backfill" and start is not None and end is not None:
            await service.backfill(pool, start, end)
        else:
            print(
                f"rolled up {await service.roll_up(pool, settings.rollups.batch_minutes)} minutes"
            )
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rollups", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "once", "backfill"])
    parser.add_argument("start", nargs="?", type=datetime.fromisoformat)
    parser.add_argument("end", nargs="?", type=datetime.fromisoformat)
    args = parser.parse_args()
    if args.command == "backfill" and (args.start is None or args.end is None):
        parser.error("backfill needs FROM and TO (RFC 3339 with offset)")
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="rollups")
    uvloop.run(_serve(args.command, args.start, args.end))


if __name__ == "__main__":
    main()
