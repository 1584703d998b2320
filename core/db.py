"""asyncpg pools for the hot paths, each connection named after its process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg
import orjson

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
) -> asyncpg.Pool:
    """Open a pool whose connections carry ``application_name`` and decode JSON with orjson."""

    async def _init(conn: asyncpg.Connection) -> None:
        await _set_codecs(conn)
        if init is not None:
            await init(conn)

    pool = await asyncpg.create_pool(
        settings.database_url,
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
