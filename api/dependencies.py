"""Typed dependencies: every resource the lifespan opened reaches a route through one of these
(never through ``app.state`` directly), and the query parts several routes share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import asyncpg
from fastapi import Depends, Query
from starlette.requests import HTTPConnection

from api.alerts.service import AlertFeed
from api.broker.management import Management
from api.broker.service import TopicRefusals
from api.keys.service import KeyChecker
from api.live.service import LiveService
from api.schemas import AggregateFn, AggregateQuery, AwareDatetime, TimeRange
from core.config import Settings
from core.errors import Invalid, Unavailable
from devices.credentials import DeviceLogins

DEFAULT_WINDOW: Final = timedelta(hours=24)


def get_pool(connection: HTTPConnection) -> asyncpg.Pool:
    """The pool opened by the app's lifespan."""
    pool: asyncpg.Pool = connection.app.state.pool
    return pool


def find_read_replica(connection: HTTPConnection) -> asyncpg.Pool | None:
    """The pool on ``DATABASE_READ_URL``'s replica, or None where none is set."""
    pool: asyncpg.Pool | None = getattr(connection.app.state, "read_pool", None)
    return pool


def get_read_pool(
    primary: Annotated[asyncpg.Pool, Depends(get_pool)],
    replica: Annotated[asyncpg.Pool | None, Depends(find_read_replica)],
) -> asyncpg.Pool:
    """Where reads that tolerate replication lag go: the replica, else the primary's pool."""
    return replica if replica is not None else primary


def get_app_settings(connection: HTTPConnection) -> Settings:
    """The settings the app was created with (tests pass their own)."""
    settings: Settings = connection.app.state.settings
    return settings


def get_device_logins(connection: HTTPConnection) -> DeviceLogins:
    """Where the registry issues, rotates and disables devices' broker logins."""
    logins: DeviceLogins = connection.app.state.device_logins
    return logins


def get_key_checker(connection: HTTPConnection) -> KeyChecker:
    checker: KeyChecker = connection.app.state.key_checker
    return checker


def find_live(connection: HTTPConnection) -> LiveService | None:
    """This replica's live feed, or None where it is disabled."""
    live: LiveService | None = getattr(connection.app.state, "live", None)
    return live


def get_live(live: Annotated[LiveService | None, Depends(find_live)]) -> LiveService:
    if live is None:
        raise Unavailable("live feeds are disabled on this replica", code="live_disabled")
    return live


def get_alert_feed(connection: HTTPConnection) -> AlertFeed:
    feed: AlertFeed | None = getattr(connection.app.state, "alert_feed", None)
    if feed is None:
        raise Unavailable("the alert feed is disabled", code="alerts_disabled")
    return feed


def get_topic_refusals(connection: HTTPConnection) -> TopicRefusals:
    refusals: TopicRefusals = connection.app.state.topic_refusals
    return refusals


def get_management(connection: HTTPConnection) -> Management | None:
    """The city edge's management API; None on the Mosquitto edge."""
    management: Management | None = connection.app.state.management
    return management


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
ReadPoolDep = Annotated[asyncpg.Pool, Depends(get_read_pool)]
ReplicaDep = Annotated[asyncpg.Pool | None, Depends(find_read_replica)]
TopicRefusalsDep = Annotated[TopicRefusals, Depends(get_topic_refusals)]
ManagementDep = Annotated[Management | None, Depends(get_management)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
LoginsDep = Annotated[DeviceLogins, Depends(get_device_logins)]
KeyCheckerDep = Annotated[KeyChecker, Depends(get_key_checker)]
LiveDep = Annotated[LiveService, Depends(get_live)]
MaybeLiveDep = Annotated[LiveService | None, Depends(find_live)]
AlertFeedDep = Annotated[AlertFeed, Depends(get_alert_feed)]


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
        raise Invalid(
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
        raise Invalid("from must be earlier than to", code="invalid_range")
    return TimeRange(start=start, end=end)


LimitDep = Annotated[int, Depends(page_limit)]
TimeRangeDep = Annotated[TimeRange, Depends(time_range)]


_METRIC_DOC: Final = "a metric, see /contract (district and city: any kind's metric)"
_BUCKET_DOC: Final = (
    "bucket width: <n><unit>, unit s, m, h (UTC-aligned) or d, w, mo (Asia/Almaty calendar),"
    " e.g. 1m, 15m, 1h, 1d, 7d, 1mo"
)
_FN_DOC: Final = (
    "What each bucket's value is, per scope (device; district and city = every device of the"
    " metric's kind there). avg, min, max: over the readings in the bucket (an area's avg is"
    " the mean of all its readings, so a device reading more often weighs more). sum: the"
    " readings' sum (an area: over all its devices). count: readings with the metric (an area:"
    " over all its devices). increase (energy_kwh only): consumption, the increase between"
    " consecutive readings with meter resets handled (an area: summed over its meters)."
    " rate (vehicle_count, heavy_vehicle_count): vehicles per hour; a device: sum(count) *"
    " 3600 / sum(interval_s); an area: its flow, every device's own rate summed (not a mean"
    " per detector)."
)


def aggregate_query(
    window: TimeRangeDep,
    metric: Annotated[str, Query(description=_METRIC_DOC)],
    bucket: Annotated[str, Query(description=_BUCKET_DOC, examples=["1h"])],
    fn: Annotated[AggregateFn, Query(description=_FN_DOC)] = AggregateFn.AVG,
    fill: Annotated[
        bool, Query(description="also list empty buckets, marked gap=true with count 0")
    ] = False,
) -> AggregateQuery:
    """What every aggregate route asks, whatever its scope."""
    return AggregateQuery(metric=metric, bucket=bucket, fn=fn, window=window, fill=fill)


AggregateQueryDep = Annotated[AggregateQuery, Depends(aggregate_query)]
