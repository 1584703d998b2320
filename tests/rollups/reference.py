"""Aggregates computed straight from raw readings, the way the tiers must agree with."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from devices.contract import Kind, readings_table

Point = tuple[datetime, int, Any]
_PLAIN: dict[str, Callable[[list[Any]], Any]] = {
    "avg": statistics.fmean,
    "min": min,
    "max": max,
    "sum": sum,
}


def _bucket_sql(calendar: bool) -> str:
    return (
        "time_bucket($1::text::interval, ts, 'Asia/Almaty')"
        if calendar
        else "time_bucket($1::text::interval, ts)"
    )


async def _values_before(
    pool: asyncpg.Pool, table: str, metric: str, device_ids: list[str], start: datetime
) -> dict[str, float | None]:
    """Each device's last value of ``metric`` before ``start`` (what an increase starts from)."""
    return {
        device_id: await pool.fetchval(
            f"SELECT {metric} FROM {table} WHERE device_id = $1 AND ts < $2"
            f" AND {metric} IS NOT NULL ORDER BY ts DESC LIMIT 1",
            device_id,
            start,
        )
        for device_id in device_ids
    }


async def from_raw(
    pool: asyncpg.Pool,
    kind: Kind,
    metric: str,
    fn: str,
    device_ids: list[str],
    interval: str,
    calendar: bool,
    start: datetime,
    end: datetime,
) -> list[Point]:
    """(bucket_start, readings, value) per bucket, from raw rows labelled by time_bucket."""
    table = readings_table(kind)
    extra = ", interval_s" if fn == "rate" else ""
    rows = await pool.fetch(
        f"SELECT device_id, ts, {_bucket_sql(calendar)} AS b, {metric} AS v{extra} FROM {table}"
        " WHERE device_id = ANY($2::text[]) AND ts >= $3 AND ts < $4 ORDER BY device_id, ts",
        interval,
        device_ids,
        start,
        end,
    )
    readings: dict[datetime, int] = defaultdict(int)
    values: dict[datetime, list[Any]] = defaultdict(list)
    # A rate per (bucket, device): counts and counting windows, summed per device first.
    device_counts: dict[datetime, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    windows: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    increases: dict[datetime, float] = {}
    previous: dict[str, float | None] = {}
    if fn == "increase":
        previous = await _values_before(pool, table, metric, device_ids, start)
    for row in rows:
        bucket = row["b"]
        readings[bucket] += 1
        raw_value = row["v"]
        if fn == "rate" and row["interval_s"] is not None:
            windows[bucket][row["device_id"]] += row["interval_s"]
        if raw_value is None:
            continue
        values[bucket].append(raw_value)
        device_counts[bucket][row["device_id"]].append(raw_value)
        if fn == "increase":
            prev = previous.get(row["device_id"])
            delta = 0.0 if prev is None else (raw_value - prev if raw_value >= prev else raw_value)
            increases[bucket] = increases.get(bucket, 0.0) + delta
            previous[row["device_id"]] = raw_value
    if fn == "rate":
        return [
            (bucket, readings[bucket], _flow(device_counts[bucket], windows[bucket]))
            for bucket in sorted(readings)
        ]
    return [
        (bucket, readings[bucket], _value(fn, values.get(bucket, []), increases.get(bucket)))
        for bucket in sorted(readings)
    ]


def _flow(counts: dict[str, list[Any]], windows: dict[str, float]) -> float | None:
    """The area's flow in a bucket: the sum of each device's vehicles per hour."""
    rates = [
        sum(got) * 3600 / windows[device]
        for device, got in counts.items()
        if got and windows.get(device)
    ]
    return sum(rates) if rates else None


def _value(fn: str, got: list[Any], increase: float | None) -> Any:
    """``fn`` of a bucket's values."""
    if fn == "count":
        return len(got)
    if not got:
        return None
    if fn == "increase":
        return increase
    return _PLAIN[fn](got)
