"""``python -m ingest``: one ingest replica, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import uvloop
from prometheus_client import start_http_server

from core.config import get_settings
from core.logging import configure_logging
from ingest.app import running_ingest


async def _serve() -> None:
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.ingest.metrics_port is not None:
        start_http_server(settings.ingest.metrics_port, addr="127.0.0.1")
    async with running_ingest(settings):
        await stop.wait()


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, process="ingest")
    uvloop.run(_serve())


if __name__ == "__main__":
    main()
