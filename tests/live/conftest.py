"""An api replica on a free port with quick live and alert settings, and feed helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn

from api.app import create_app
from core.config import AlertSettings, LiveSettings, Settings
from stack.services import free_port


def quick_settings(settings: Settings, **live: object) -> Settings:
    """Heartbeats every second, alerts evaluated often, unknown devices looked up at once."""
    options: dict[str, object] = {
        "heartbeat_s": 1.0,
        "unknown_device_recheck_s": 0,
        "device_refresh_s": 2.0,
        **live,
    }
    live_settings = LiveSettings.model_validate(options)
    return settings.model_copy(
        update={"live": live_settings, "alerts": AlertSettings(evaluate_interval_s=0.3)}
    )


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[str]:
    """The real app served by uvicorn, its lifespan (MQTT subscription included) started."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def live_url(settings: Settings) -> AsyncIterator[str]:
    async with running_api(quick_settings(settings)) as url:
        yield url
