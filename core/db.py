"""asyncpg pools for the hot paths, each connection named after its process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg
import orjson
import structlog

from core.config import Settings

# Failures that mean the database is away (down, restarting, unreachable, out of connections),
# not that it refused what was sent: wait and retry, keep the data, answer 503.
DATABASE_UNAVAILABLE: Final[tuple[type[Exception], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    # Admin and crash shutdowns, "cannot connect now" while starting or recovering.
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    # The connection's state machine broken by an outage mid-operation ("cannot switch to
    # state ...; another operation is in progress"): a fresh connection clears it.
    asyncpg.InternalClientError,
)
# Worth retrying as a whole besides: the database is up but this attempt lost a race.
RETRYABLE: Final[tuple[type[Exception], ...]] = (
    *DATABASE_UNAVAILABLE,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


async def _set_codecs(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    settings: Settings,
    application_name: str,
    *,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    url: str | None = None,
) -> asyncpg.Pool:
    """Open a pool whose connections carry ``application_name`` and decode JSON with orjson;
    on ``DATABASE_URL`` unless ``url`` names another server (a streaming replica)."""

    async def _init(conn: asyncpg.Connection) -> None:
        await _set_codecs(conn)
        if init is not None:
            await init(conn)

    pool = await asyncpg.create_pool(
        url or settings.database_url,
        min_size=settings.database.pool_min_size,
        max_size=settings.database.pool_max_size,
        command_timeout=settings.database.command_timeout_s,
        server_settings={"application_name": application_name},
        init=_init,
    )
    assert pool is not None  # create_pool returns None only when awaited lazily
    return pool


# What repositories accept: a bare connection, or one borrowed from a pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


log = structlog.get_logger(__name__)
T = TypeVar("T")


async def until_available(
    operation: Callable[[], Awaitable[T]],
    *,
    initial_s: float,
    max_s: float,
    stop: asyncio.Event | None = None,
    step: str,
) -> T | None:
    """Await ``operation`` until the database lets it through, waiting ``initial_s`` doubling
    to ``max_s`` between tries, each logged; None if ``stop`` is set first."""
    delay = initial_s
    failing_since: float | None = None
    while stop is None or not stop.is_set():
        try:
            result = await operation()
        except RETRYABLE as exc:
            if failing_since is None:
                failing_since = time.monotonic()
            log.warning(
                "database unavailable, retrying"
                if isinstance(exc, DATABASE_UNAVAILABLE)
                else "transaction aborted by the database, retrying",
                step=step,
                error=repr(exc),
                retry_in_s=delay,
            )
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, max_s)
            continue
        if failing_since is not None:
            log.info(
                "database available again",
                step=step,
                unavailable_s=round(time.monotonic() - failing_since, 1),
            )
        return result
    return None
