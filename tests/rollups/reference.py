"""Aggregates computed straight from raw readings, the way the tiers must agree with."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg

from devices.contract import Kind, readings_table

Point = tuple[datetime, int, Any]


def _bucket_sql(calendar: bool) -> str:
    return (
        "time_bucket($1::text::interval, ts, 'Asia/Almaty')"
        if calendar
        else "time_bucket($1::text::interval, ts)"
    )


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
    windows: dict[datetime, float] = defaultdict(float)
    increases: dict[datetime, float] = {}
    previous: dict[str, float | None] = {}
    if fn == "increase":
        for device_id in device_ids:
            previous[device_id] = await pool.fetchval(
                f"SELECT {metric} FROM {table} WHERE device_id = $1 AND ts < $2"
                f" AND {metric} IS NOT NULL ORDER BY ts DESC LIMIT 1",
                device_id,
                start,
            )
    for row in rows:
        bucket = row["b"]
        readings[bucket] += 1
        value = row["v"]
        if fn == "rate" and row["interval_s"] is not None:
            windows[bucket] += row["interval_s"]
        if value is None:
            continue
        values[bucket].append(value)
        if fn == "increase":
            prev = previous.get(row["device_id"])
            delta = 0.0 if prev is None else (value - prev if value >= prev else value)
            increases[bucket] = increases.get(bucket, 0.0) + delta
            previous[row["device_id"]] = value
    result: list[Point] = []
    for bucket in sorted(readings):
        got = values.get(bucket, [])
        value: Any
        if fn == "count":
            value = len(got)
        elif not got:
            value = None
        elif fn == "avg":
            value = statistics.fmean(got)
        elif fn == "min":
            value = min(got)
        elif fn == "max":
            value = max(got)
        elif fn == "sum":
            value = sum(got)
        elif fn == "rate":
            value = sum(got) * 3600 / windows[bucket] if windows[bucket] else None
        else:
            value = increases.get(bucket)
        result.append((bucket, readings[bucket], value))
    return result
