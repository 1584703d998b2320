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


async def members_of(pool: asyncpg.Pool, kind: Kind, area: str) -> list[str]:
    """The devices an area holds now: a district's, or every device of the kind for the city."""
    rows = await pool.fetch(
        "SELECT device_id FROM devices WHERE kind = $1 AND ($2 = 'city' OR district = $2)"
        " ORDER BY device_id",
        kind.value,
        area,
    )
    return [row["device_id"] for row in rows]


async def area_rows(
    pool: asyncpg.Pool,
    kind: Kind,
    area: str,
    metrics: list[str],
    interval: str,
    calendar: bool,
    start: datetime,
    end: datetime,
) -> dict[datetime, dict[str, Any]]:
    """What an area tier row must hold per bucket, summed in Python over the area's devices:
    readings, and per metric n, min, max, sum; ``energy_kwh`` also its increase, each reading
    counted from its device's previous reading (however long before)."""
    table = readings_table(kind)
    devices = await members_of(pool, kind, area)
    rows = await pool.fetch(
        f"SELECT device_id, ts, {_bucket_sql(calendar)} AS b, {', '.join(metrics)} FROM {table}"
        " WHERE device_id = ANY($2::text[]) ORDER BY device_id, ts",
        interval,
        devices,
    )
    out: dict[datetime, dict[str, Any]] = {}
    previous: dict[str, float] = {}
    for row in rows:
        bucket = row["b"]
        register = row["energy_kwh"] if "energy_kwh" in metrics else None
        step = None
        if register is not None:
            prev = previous.get(row["device_id"])
            step = 0.0 if prev is None else (register - prev if register >= prev else register)
            previous[row["device_id"]] = register
        if not start <= row["ts"] < end:
            continue
        got = out.setdefault(bucket, {"readings": 0})
        got["readings"] += 1
        for metric in metrics:
            value = row[metric]
            got.setdefault(f"{metric}_n", 0)
            if value is None:
                continue
            got[f"{metric}_n"] += 1
            got[f"{metric}_min"] = min(got.get(f"{metric}_min", value), value)
            got[f"{metric}_max"] = max(got.get(f"{metric}_max", value), value)
            got[f"{metric}_sum"] = got.get(f"{metric}_sum", 0) + value
        if step is not None:
            got["energy_kwh_increase"] = got.get("energy_kwh_increase", 0.0) + step
    return out
