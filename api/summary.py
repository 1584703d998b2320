"""City KPIs per district and for the whole city: air-quality index, traffic congestion and
energy load, all read through the exact tiered aggregates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import asyncpg

from api import repository
from api.aqi import POLLUTANTS, category
from api.schemas import (
    AirSummary,
    AreaSummary,
    CitySummary,
    EnergySummary,
    PollutantIndex,
    TrafficSummary,
)
from core.db import Connection
from devices import service as registry
from devices.contract import METRICS_BY_NAME, District, Kind
from rollups import service as rollups
from rollups.buckets import DAY, HOUR, Bucket

RECENT: Final = timedelta(minutes=15)
FREE_FLOW_LOOKBACK: Final = timedelta(days=7)


async def _values(
    conn: Connection,
    kind: Kind,
    devices: list[str],
    *,
    metric: str,
    fn: str,
    bucket: Bucket,
    start: datetime,
    end: datetime,
) -> list[float | None]:
    if not devices:
        return []
    plan = rollups.plan(bucket, start, end)
    metrics = (metric, "interval_s") if fn == "rate" else (metric,)
    rows = await rollups.series(
        conn,
        kind,
        metrics=metrics,
        fn=fn,
        device_ids=devices,
        the_plan=plan,
        start=start,
        end=end,
    )
    return [row["value"] for row in rows]


async def _mean(
    conn: Connection, kind: Kind, devices: list[str], metric: str, window: tuple[datetime, datetime]
) -> float | None:
    """The mean of a metric over [start, end): sum over count, both exact."""
    start, end = window
    sums = await _values(
        conn, kind, devices, metric=metric, fn="sum", bucket=HOUR, start=start, end=end
    )
    counts = await _values(
        conn, kind, devices, metric=metric, fn="count", bucket=HOUR, start=start, end=end
    )
    total = [v for v in sums if v]
    count = [v for v in counts if v]
    return sum(total) / sum(count) if count and sum(count) else None


async def _air(conn: Connection, devices: list[str], at: datetime) -> AirSummary:
    pollutants: dict[str, PollutantIndex] = {}
    for pollutant in POLLUTANTS:
        average = await _mean(
            conn, Kind.AIR, devices, pollutant.metric, (at - pollutant.window, at)
        )
        if average is not None:
            pollutants[pollutant.metric] = PollutantIndex(
                average=average,
                window_hours=pollutant.window.total_seconds() / 3600,
                sub_index=pollutant.sub_index(average),
            )
    if not pollutants:
        return AirSummary(aqi=None, category=None, dominant=None, pollutants={})
    dominant = max(pollutants, key=lambda name: pollutants[name].sub_index)
    aqi = pollutants[dominant].sub_index
    return AirSummary(aqi=aqi, category=category(aqi), dominant=dominant, pollutants=pollutants)


async def _traffic(conn: Connection, devices: list[str], at: datetime) -> TrafficSummary:
    speed = await _mean(conn, Kind.TRAFFIC, devices, "avg_speed_kmh", (at - RECENT, at))
    hourly = await _values(
        conn,
        Kind.TRAFFIC,
        devices,
        metric="avg_speed_kmh",
        fn="avg",
        bucket=HOUR,
        start=at - FREE_FLOW_LOOKBACK,
        end=at,
    )
    free_flow = max((v for v in hourly if v is not None), default=None)
    congestion = None
    if speed is not None and free_flow:
        congestion = round(min(max(1 - speed / free_flow, 0.0), 1.0), 4)
    rate = await _values(
        conn,
        Kind.TRAFFIC,
        devices,
        metric="vehicle_count",
        fn="sum",
        bucket=HOUR,
        start=at - timedelta(hours=1),
        end=at,
    )
    vehicles = sum(v for v in rate if v is not None) if rate else None
    return TrafficSummary(
        avg_speed_kmh=speed,
        free_flow_kmh=free_flow,
        congestion=congestion,
        vehicles_per_hour=vehicles,
    )


async def _energy(conn: Connection, devices: list[str], at: datetime) -> EnergySummary:
    load = await repository.sum_of_device_means(
        conn,
        Kind.ENERGY,
        devices,
        METRICS_BY_NAME[Kind.ENERGY]["power_kw"],
        window=(at - RECENT, at),
    )
    midnight = DAY.floor(at)
    today = await _values(
        conn,
        Kind.ENERGY,
        devices,
        metric="energy_kwh",
        fn="increase",
        bucket=DAY,
        start=midnight,
        end=at,
    )
    return EnergySummary(
        load_kw=load,
        consumption_today_kwh=sum(v for v in today if v is not None) if today else None,
    )


async def _area(conn: Connection, district: District | None, at: datetime) -> AreaSummary:
    ids = {}
    for kind in Kind:
        ids[kind] = [device.device_id for device in await registry.devices_of(conn, kind, district)]
    return AreaSummary(
        district=district,
        at=at,
        air=await _air(conn, ids[Kind.AIR], at),
        traffic=await _traffic(conn, ids[Kind.TRAFFIC], at),
        energy=await _energy(conn, ids[Kind.ENERGY], at),
    )


async def district_summary(pool: asyncpg.Pool, district: District, at: datetime) -> AreaSummary:
    """AQI, congestion and energy load of one district at ``at``."""
    async with pool.acquire() as conn:
        return await _area(conn, district, at)


async def city_summary(pool: asyncpg.Pool, at: datetime) -> CitySummary:
    """The same KPIs city-wide (all devices), and per district."""
    async with pool.acquire() as conn:
        city = await _area(conn, None, at)
        districts = [await _area(conn, district, at) for district in District]
    return CitySummary(**city.model_dump(), districts=districts)
