"""Aggregates per device, per district and city-wide, answered by the rollup query planner.

Every answer equals the aggregate computed straight from raw readings: clean tier buckets come
from the cheapest rollup tier (for a district or the city, its area tier: one row per bucket,
not one per device), everything else (range edges, buckets holding late readings not yet rolled
up) from raw, read once for the whole area. No SQL and no HTTP here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import asyncpg

from api.schemas import (
    AggregateFn,
    AggregatePoint,
    AggregateQuery,
    AggregateScope,
    AggregateSeries,
    TimeRange,
)
from core.config import Settings
from core.db import Connection
from core.errors import Invalid
from core.timestamps import CITY_ZONE
from devices import service as registry
from devices.contract import METRICS, METRICS_BY_NAME, District, Kind, metric_names
from devices.schemas import Device
from rollups import service as rollups
from rollups.buckets import Bucket, parse_bucket
from rollups.schemas import CITY_AREA, CUMULATIVE, WINDOW_COUNTS, WINDOW_METRIC, kind_of_metric

EXPECTED_INTERVAL_KEY: Final = "expected_interval_s"


def check_bucket_count(width: Bucket, window: TimeRange, max_buckets: int) -> None:
    buckets = width.count_between(window.start, window.end)
    if buckets > max_buckets:
        raise Invalid(
            f"{buckets} buckets of {width.text} between from and to; at most {max_buckets} are"
            " served per request: widen the bucket or narrow the range",
            code="too_many_buckets",
        )


def _check_fn(kind: Kind, metric: str, fn: AggregateFn) -> None:
    if fn is AggregateFn.INCREASE and (kind, metric) not in CUMULATIVE:
        raise Invalid(
            "fn=increase is for cumulative registers: "
            + ", ".join(name for _, name in sorted(CUMULATIVE)),
            code="invalid_fn",
        )
    if fn is AggregateFn.RATE and (kind, metric) not in WINDOW_COUNTS:
        raise Invalid(
            f"fn=rate (per hour of {WINDOW_METRIC}) is for window counts: "
            + ", ".join(name for _, name in sorted(WINDOW_COUNTS)),
            code="invalid_fn",
        )


def _unknown_metric(metric: str, kind: Kind | None) -> Invalid:
    if kind is not None:
        detail = f"{metric!r} is not a {kind.value} metric; {kind.value} metrics are: " + ", ".join(
            metric_names(kind)
        )
    else:
        detail = f"{metric!r} is not a metric; metrics are: " + ", ".join(
            m.name for metrics in METRICS.values() for m in metrics
        )
    return Invalid(detail, code="unknown_metric")


# --- the endpoints' service -------------------------------------------------------------------


async def _scope_devices(
    conn: Connection,
    scope: AggregateScope,
    device_id: str | None,
    district: District | None,
    metric: str,
) -> tuple[Kind, list[Device]]:
    if scope is AggregateScope.DEVICE:
        assert device_id is not None
        device = await registry.get_device_on(conn, device_id)
        if metric not in METRICS_BY_NAME[device.kind]:
            raise _unknown_metric(metric, device.kind)
        return device.kind, [device]
    found = kind_of_metric(metric)
    if found is None:
        raise _unknown_metric(metric, None)
    return found, await registry.devices_of(conn, found, district)


def expected_interval_s(device: Device, default_interval_s: float) -> float:
    """The device's reading period: ``metadata.expected_interval_s``, else the default."""
    metadata = device.metadata
    interval = (
        metadata.get(EXPECTED_INTERVAL_KEY, default_interval_s)
        if isinstance(metadata, dict)
        else default_interval_s
    )
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0:
        return default_interval_s
    return float(interval)


def readings_per_second(devices: list[Device], default_interval_s: float) -> float:
    """How many readings the devices together are expected to send per second."""
    return sum(1.0 / expected_interval_s(device, default_interval_s) for device in devices)


async def aggregates(
    pool: asyncpg.Pool,
    settings: Settings,
    query: AggregateQuery,
    *,
    scope: AggregateScope,
    device_id: str | None = None,
    district: District | None = None,
) -> AggregateSeries:
    """``fn(metric)`` per bucket over the scope's devices; refuses (never truncates) a range
    that needs more buckets than the configured limit."""
    metric, bucket, fn, window, fill = (
        query.metric,
        query.bucket,
        query.fn,
        query.window,
        query.fill,
    )
    width = parse_bucket(bucket)
    check_bucket_count(width, window, settings.api.max_buckets)
    async with pool.acquire() as conn:
        kind, devices = await _scope_devices(conn, scope, device_id, district, metric)
        _check_fn(kind, metric, fn)
        plan = rollups.plan(width, window.start, window.end)
        metrics = (metric, WINDOW_METRIC) if fn is AggregateFn.RATE else (metric,)
        rows = []
        # An area's rate is its flow, each device's own rate summed: pre-summed area rows hold
        # only the pooled count and interval, so a rate reads the device tiers.
        if devices and (scope is AggregateScope.DEVICE or fn is AggregateFn.RATE):
            rows = await rollups.series(
                conn,
                kind,
                metrics=metrics,
                fn=fn.value,
                device_ids=[d.device_id for d in devices],
                the_plan=plan,
                start=window.start,
                end=window.end,
            )
        elif devices:
            rows = await rollups.area_series(
                conn,
                kind,
                metrics=metrics,
                fn=fn.value,
                areas=[district.value if district is not None else CITY_AREA],
                the_plan=plan,
                start=window.start,
                end=window.end,
            )
    rate = readings_per_second(devices, settings.rollups.expected_interval_s)

    def completeness(start: datetime, readings: int) -> float | None:
        lower, upper = max(start, window.start), min(width.following(start), window.end)
        expected = rate * max((upper - lower).total_seconds(), 0.0)
        # Stored readings are unique per (device, ts), so a redelivery never counts twice; a
        # device reporting faster than declared would still pass 1, which means "complete".
        return round(min(readings / expected, 1.0), 4) if expected > 0 else None

    # One spelling per width: UTC for fixed widths, the city's offset for its calendar.
    zone = CITY_ZONE if width.city_calendar else UTC

    items = [
        AggregatePoint(
            bucket_start=row["bucket_start"].astimezone(zone),
            value=row["value"],
            count=row["readings"],
            completeness=completeness(row["bucket_start"], row["readings"]),
        )
        for row in rows
    ]
    if fill:
        have = {item.bucket_start for item in items}
        for start in width.starts(window.start, window.end):
            if start not in have:
                items.append(
                    AggregatePoint(
                        bucket_start=start.astimezone(zone),
                        value=None,
                        count=0,
                        completeness=completeness(start, 0),
                        gap=True,
                    )
                )
        items.sort(key=lambda item: item.bucket_start)
    definition = METRICS_BY_NAME[kind][metric]
    unit = "vehicles/h" if fn is AggregateFn.RATE else definition.unit
    return AggregateSeries(
        scope=scope,
        device_id=device_id,
        district=district,
        kind=kind,
        devices=len(devices),
        metric=metric,
        unit=unit,
        bucket=bucket,
        fn=fn,
        tier=plan.tier.value,
        items=items,
    )
