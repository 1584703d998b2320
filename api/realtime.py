"""The api's background parts, opened after the pool and closed before it: the live feed's
MQTT subscription, the alert evaluator and the alert listener."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog
from fastapi import FastAPI

from api.alerts.service import AlertFeed, listen, run_evaluator
from api.live.service import LiveService
from core.config import Settings

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def realtime(
    app: FastAPI, settings: Settings, pool: asyncpg.Pool, read_pool: asyncpg.Pool
) -> AsyncIterator[None]:
    """Start what is enabled in the settings; stop it in reverse order. The alerts write, so
    they use the primary; the live feed only reads, from ``read_pool`` where it may."""
    tasks: list[asyncio.Task[None]] = []
    live: LiveService | None = None
    if settings.alerts.enabled:
        feed = AlertFeed()
        app.state.alert_feed = feed
        tasks.append(asyncio.create_task(listen(settings, feed), name="alert-listener"))
        tasks.append(
            asyncio.create_task(
                run_evaluator(pool, settings.alerts.evaluate_interval_s), name="alert-evaluator"
            )
        )
    try:
        if settings.live.enabled:
            live = LiveService(settings, pool, read_pool)
            await live.start()
            app.state.live = live
        yield
    finally:
        app.state.live = None
        app.state.alert_feed = None
        if live is not None:
            await live.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
