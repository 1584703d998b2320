"""City KPIs per district and for the whole city: air-quality index, traffic congestion and
energy load. Every area of a summary is answered by the same few queries (one per window and
kind, all areas at once) over the maintained area tiers, with raw for the window edges, so the
answer equals the KPIs computed from raw readings."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from api.aqi import POLLUTANTS, Pollutant, category
from api.schemas import (
    AirSummary,
    AreaSummary,
    CitySummary,
    EnergySummary,
    PollutantIndex,
    TrafficSummary,
)
from core.db import Connection
from devices.contract import District, Kind
from rollups import service as rollups
from rollups.buckets import DAY, HOUR
from rollups.schemas import CITY_AREA

RECENT: Final = timedelta(minutes=15)
FREE_FLOW_LOOKBACK: Final = timedelta(days=7)


def _area(district: District | None) -> str:
    return district.value if district is not None else CITY_AREA


def _mean(totals: asyncpg.Record | None, metric: str) -> float | None:
    """sum over count, both exact; None when the area has no value of the metric."""
    if totals is None or not totals[f"{metric}_n"]:
        return None
    return float(totals[f"{metric}_sum"] or 0) / float(totals[f"{metric}_n"])


async def _air(conn: Connection, areas: list[str], at: datetime) -> dict[str, AirSummary]:
    by_window: dict[timedelta, list[Pollutant]] = defaultdict(list)
    for pollutant in POLLUTANTS:
        by_window[pollutant.window].append(pollutant)
    indexes: dict[str, dict[str, PollutantIndex]] = {area: {} for area in areas}
    for window, pollutants in by_window.items():
        totals = await rollups.area_totals(
            conn,
            Kind.AIR,
            metrics=tuple(p.metric for p in pollutants),
            areas=areas,
            start=at - window,
            end=at,
        )
        for area in areas:
            for pollutant in pollutants:
                average = _mean(totals.get(area), pollutant.metric)
                if average is not None:
                    indexes[area][pollutant.metric] = PollutantIndex(
                        average=average,
                        window_hours=window.total_seconds() / 3600,
                        sub_index=pollutant.sub_index(average),
                    )
    summaries = {}
    for area in areas:
        # In the contract's order, as the pollutants are listed.
        found = {p.metric: indexes[area][p.metric] for p in POLLUTANTS if p.metric in indexes[area]}
        if not found:
            summaries[area] = AirSummary(aqi=None, category=None, dominant=None, pollutants={})
            continue
        dominant = max(found, key=lambda name: found[name].sub_index)
        aqi = found[dominant].sub_index
        summaries[area] = AirSummary(
            aqi=aqi, category=category(aqi), dominant=dominant, pollutants=found
        )
    return summaries


async def _traffic(conn: Connection, areas: list[str], at: datetime) -> dict[str, TrafficSummary]:
    recent = await rollups.area_totals(
        conn, Kind.TRAFFIC, metrics=("avg_speed_kmh",), areas=areas, start=at - RECENT, end=at
    )
    lookback = at - FREE_FLOW_LOOKBACK
    hourly = await rollups.area_series(
        conn,
        Kind.TRAFFIC,
        metrics=("avg_speed_kmh",),
        fn="avg",
        areas=areas,
        the_plan=rollups.plan(HOUR, lookback, at),
        start=lookback,
        end=at,
    )
    fastest: dict[str, float] = {}
    for row in hourly:
        if row["value"] is not None:
            fastest[row["area"]] = max(fastest.get(row["area"], row["value"]), row["value"])
    last_hour = await rollups.area_totals(
        conn,
        Kind.TRAFFIC,
        metrics=("vehicle_count",),
        areas=areas,
        start=at - timedelta(hours=1),
        end=at,
    )
    summaries = {}
    for area in areas:
        speed, free_flow = _mean(recent.get(area), "avg_speed_kmh"), fastest.get(area)
        congestion = None
        if speed is not None and free_flow:
            congestion = round(min(max(1 - speed / free_flow, 0.0), 1.0), 4)
        counted = last_hour.get(area)
        summaries[area] = TrafficSummary(
            avg_speed_kmh=speed,
            free_flow_kmh=free_flow,
            congestion=congestion,
            vehicles_per_hour=None if counted is None else counted["vehicle_count_sum"] or 0,
        )
    return summaries


async def _energy(conn: Connection, areas: list[str], at: datetime) -> dict[str, EnergySummary]:
    load = await rollups.area_sum_of_device_means(
        conn, Kind.ENERGY, "power_kw", areas=areas, start=at - RECENT, end=at
    )
    today = await rollups.area_totals(
        conn, Kind.ENERGY, metrics=("energy_kwh",), areas=areas, start=DAY.floor(at), end=at
    )
    return {
        area: EnergySummary(
            load_kw=load.get(area),
            consumption_today_kwh=(
                None if area not in today else today[area]["energy_kwh_increase"] or 0.0
            ),
        )
        for area in areas
    }


async def _areas(
    conn: Connection, districts: list[District | None], at: datetime
) -> list[AreaSummary]:
    areas = [_area(district) for district in districts]
    air = await _air(conn, areas, at)
    traffic = await _traffic(conn, areas, at)
    energy = await _energy(conn, areas, at)
    return [
        AreaSummary(
            district=district,
            at=at,
            air=air[area],
            traffic=traffic[area],
            energy=energy[area],
        )
        for district, area in zip(districts, areas, strict=True)
    ]


async def district_summary(pool: asyncpg.Pool, district: District, at: datetime) -> AreaSummary:
    """AQI, congestion and energy load of one district at ``at``."""
    async with pool.acquire() as conn:
        (summary,) = await _areas(conn, [district], at)
    return summary


async def city_summary(pool: asyncpg.Pool, at: datetime) -> CitySummary:
    """The same KPIs city-wide (all devices), and per district."""
    async with pool.acquire() as conn:
        city, *districts = await _areas(conn, [None, *District], at)
    return CitySummary(**city.model_dump(), districts=districts)
