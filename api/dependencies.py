"""Typed dependencies: the resources the lifespan opened, and query parts several routes share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import asyncpg
from fastapi import Depends, Query, Request

from api.errors import InvalidQuery
from api.schemas import AwareDatetime, TimeRange
from core.config import Settings
from devices.credentials import DynsecClient

DEFAULT_WINDOW: Final = timedelta(hours=24)


def get_pool(request: Request) -> asyncpg.Pool:
    """The pool opened by the app's lifespan."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (tests pass their own)."""
    settings: Settings = request.app.state.settings
    return settings


def get_broker_registry(request: Request) -> DynsecClient:
    """The broker connection through which the registry manages device logins."""
    registry: DynsecClient = request.app.state.broker_registry
    return registry


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
BrokerDep = Annotated[DynsecClient, Depends(get_broker_registry)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def page_limit(
    settings: SettingsDep,
    limit: Annotated[
        int | None,
        Query(ge=1, description="page size; defaults to and is capped by the server settings"),
    ] = None,
) -> int:
    """The page size asked for, or the default; above the configured maximum is a 422."""
    if limit is None:
        return settings.api.default_page_size
    if limit > settings.api.max_page_size:
        raise InvalidQuery(
            f"limit {limit} is above the maximum page size {settings.api.max_page_size}",
            code="limit_too_large",
        )
    return limit


def time_range(
    start: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="inclusive, RFC 3339 with offset; default `to` - 24 h"),
    ] = None,
    end: Annotated[
        AwareDatetime | None,
        Query(alias="to", description="exclusive, RFC 3339 with offset; default now"),
    ] = None,
) -> TimeRange:
    """A reading-time window ``[from, to)`` with defaults: the last 24 hours."""
    end = end or datetime.now(UTC)
    start = start or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidQuery("from must be earlier than to", code="invalid_range")
    return TimeRange(start=start, end=end)


LimitDep = Annotated[int, Depends(page_limit)]
TimeRangeDep = Annotated[TimeRange, Depends(time_range)]
