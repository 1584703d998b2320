"""City KPIs per district and for the whole city: air-quality index, traffic congestion and
energy load. Each figure states its window and how much of it the stored readings cover, so a
24 h figure computed from half an hour of data says so.

One summary asks the database once per KPI window for every area it shows (the city and its
districts together): the long windows (the AQI's 1, 8 and 24 hours, today's consumption) from
the area tiers, pre-summed per district and city; the short per-device figures (a road's speeds
against its own free flow, each detector's flow, each meter's mean power) from raw readings of
the last 15 minutes or hour, once per device, then summed per area.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from api import repository
from api.aggregates import readings_per_second
from api.aqi import POLLUTANTS, Pollutant, category
from api.schemas import (
    AirSummary,
    AreaSummary,
    CitySummary,
    EnergySummary,
    FigureWindow,
    PollutantIndex,
    TrafficSummary,
)
from core.db import Connection
from devices import service as registry
from devices.contract import METRICS_BY_NAME, District, Kind
from devices.schemas import Device
from rollups import service as rollups
from rollups.buckets import DAY
from rollups.schemas import CITY_AREA

RECENT: Final = timedelta(minutes=15)
FLOW_WINDOW: Final = timedelta(hours=1)
# A road's free-flow speed, set when it is commissioned (the simulator registers its own).
FREE_FLOW_KEY: Final = "free_flow_kmh"
# A road without one has its free-flow speed learned once a day of history allows: the 85th
# percentile of its hourly mean speeds over the last 7 days (night hours run free).
LEARNING_WINDOW: Final = timedelta(days=7)
LEARNING_MIN_HOURS: Final = 24
LEARNING_PERCENTILE: Final = 0.85

Window = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class _Area:
    """One area of a summary: its name in the area tiers (a district's, or ``city``), its
    devices per kind, and the reading period assumed where a device declares none."""

    name: str
    district: District | None
    devices: dict[Kind, list[Device]]
    default_interval_s: float

    def ids(self, kind: Kind) -> list[str]:
        return [device.device_id for device in self.devices[kind]]

    def window(
        self, kind: Kind, window: Window, readings: float, devices: Sequence[Device] | None = None
    ) -> FigureWindow:
        """``window`` with the share of the readings expected from ``devices`` (default: all
        of the kind) that are stored."""
        start, end = window
        seconds = max((end - start).total_seconds(), 0.0)
        chosen = self.devices[kind] if devices is None else list(devices)
        expected = readings_per_second(chosen, self.default_interval_s) * seconds
        coverage = round(min(readings / expected, 1.0), 4) if expected > 0 else None
        return FigureWindow(start=start, end=end, seconds=seconds, coverage=coverage)


def _areas(
    devices: dict[Kind, list[Device]], districts: Iterable[District | None], interval_s: float
) -> list[_Area]:
    return [
        _Area(
            district.value if district else CITY_AREA,
            district,
            {
                kind: [d for d in of_kind if district is None or d.district is district]
                for kind, of_kind in devices.items()
            },
            interval_s,
        )
        for district in districts
    ]


async def _area_totals(
    conn: Connection, kind: Kind, metrics: tuple[str, ...], areas: list[_Area], window: Window
) -> dict[str, asyncpg.Record]:
    """Per area name, its totals over the window (read once for all the areas)."""
    start, end = window
    names = [area.name for area in areas if area.devices[kind]]
    if not names or start >= end:
        return {}
    rows = await rollups.area_totals(conn, kind, metrics=metrics, areas=names, start=start, end=end)
    return {row["area"]: row for row in rows}


# --- air ---------------------------------------------------------------------------------------


async def _air(conn: Connection, areas: list[_Area], at: datetime) -> dict[str, AirSummary]:
    by_window: dict[timedelta, list[Pollutant]] = defaultdict(list)
    for pollutant in POLLUTANTS:
        by_window[pollutant.window].append(pollutant)
    indexes: dict[str, dict[str, PollutantIndex]] = {area.name: {} for area in areas}
    for span, pollutants in by_window.items():
        window = (at - span, at)
        metrics = tuple(pollutant.metric for pollutant in pollutants)
        totals = await _area_totals(conn, Kind.AIR, metrics, areas, window)
        for area in areas:
            row = totals.get(area.name)
            for pollutant in pollutants:
                if row is None or not row[f"{pollutant.metric}_n"]:
                    continue
                count = row[f"{pollutant.metric}_n"]
                average = row[f"{pollutant.metric}_sum"] / count
                indexes[area.name][pollutant.metric] = PollutantIndex(
                    average=average,
                    window_hours=span.total_seconds() / 3600,
                    sub_index=pollutant.sub_index(average),
                    window=area.window(Kind.AIR, window, count),
                )
    return {area.name: _air_of(area, indexes[area.name], at) for area in areas}


def _air_of(area: _Area, pollutants: dict[str, PollutantIndex], at: datetime) -> AirSummary:
    if not pollutants:
        longest = max(pollutant.window for pollutant in POLLUTANTS)
        return AirSummary(
            aqi=None,
            category=None,
            dominant=None,
            pollutants={},
            windows={"aqi": area.window(Kind.AIR, (at - longest, at), 0)},
        )
    dominant = max(pollutants, key=lambda name: pollutants[name].sub_index)
    aqi = pollutants[dominant].sub_index
    return AirSummary(
        aqi=aqi,
        category=category(aqi),
        dominant=dominant,
        pollutants=pollutants,
        windows={"aqi": pollutants[dominant].window},
    )


# --- traffic -----------------------------------------------------------------------------------


def _free_flow(device: Device) -> float | None:
    value = device.metadata.get(FREE_FLOW_KEY) if isinstance(device.metadata, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


async def _free_flows(conn: Connection, roads: list[Device], at: datetime) -> dict[str, float]:
    """Each road's free-flow speed: configured, else learned from a day or more of history;
    a road with neither has none (and stays out of the congestion)."""
    configured = {
        device.device_id: free_flow
        for device in roads
        if (free_flow := _free_flow(device)) is not None
    }
    unset = [device.device_id for device in roads if device.device_id not in configured]
    learned = {}
    if unset:
        learned = await repository.learned_free_flow(
            conn,
            unset,
            window=(at - LEARNING_WINDOW, at),
            min_hours=LEARNING_MIN_HOURS,
            percentile=LEARNING_PERCENTILE,
        )
    return configured | learned


async def _per_device(
    conn: Connection, kind: Kind, devices: list[Device], names: Sequence[str], window: Window
) -> dict[str, asyncpg.Record]:
    """Per device with readings in the window, its totals of the named metrics (from raw)."""
    if not devices:
        return {}
    metrics = [METRICS_BY_NAME[kind][name] for name in names]
    ids = [device.device_id for device in devices]
    rows = await repository.per_device_totals(conn, kind, ids, metrics, window=window)
    return {row["device_id"]: row for row in rows}


@dataclass(frozen=True, slots=True)
class _Roads:
    """What a traffic summary needs of every road of the summary, read once."""

    speeds: dict[str, asyncpg.Record]  # the last 15 minutes
    counts: dict[str, asyncpg.Record]  # the last hour
    free_flows: dict[str, float]


async def _roads(conn: Connection, roads: list[Device], at: datetime) -> _Roads:
    return _Roads(
        speeds=await _per_device(conn, Kind.TRAFFIC, roads, ["avg_speed_kmh"], (at - RECENT, at)),
        counts=await _per_device(
            conn, Kind.TRAFFIC, roads, ["vehicle_count", "interval_s"], (at - FLOW_WINDOW, at)
        ),
        free_flows=await _free_flows(conn, roads, at),
    )


def _traffic(area: _Area, roads: _Roads, at: datetime) -> TrafficSummary:
    mine = area.ids(Kind.TRAFFIC)
    speeds = [roads.speeds[d] for d in mine if d in roads.speeds]
    count = sum(row["avg_speed_kmh_n"] for row in speeds)
    total = sum(row["avg_speed_kmh_sum"] or 0.0 for row in speeds)
    # Congestion compares each road with its own free-flow speed, weighted by its readings:
    # 1 - (sum of speeds) / (sum of the free-flow speeds those readings had).
    referenced = [d for d in area.devices[Kind.TRAFFIC] if d.device_id in roads.free_flows]
    reference, observed, weight, measured = 0.0, 0.0, 0, 0
    for row in speeds:
        free_flow = roads.free_flows.get(row["device_id"])
        if free_flow is None or not row["avg_speed_kmh_n"]:
            continue
        reference += free_flow * row["avg_speed_kmh_n"]
        observed += row["avg_speed_kmh_sum"]
        weight += row["avg_speed_kmh_n"]
        measured += 1
    congestion = round(min(max(1 - observed / reference, 0.0), 1.0), 4) if reference else None
    # The area's vehicles per hour: each detector's rate over the last hour, summed (the
    # aggregates' ``fn=rate`` over an area).
    counts = [roads.counts[d] for d in mine if d in roads.counts]
    rates = [
        row["vehicle_count_sum"] * 3600 / row["interval_s_sum"]
        for row in counts
        if row["vehicle_count_n"] and row["interval_s_sum"]
    ]
    recent = (at - RECENT, at)
    return TrafficSummary(
        avg_speed_kmh=total / count if count else None,
        free_flow_kmh=reference / weight if weight else None,
        congestion=congestion,
        congestion_devices=measured,
        vehicles_per_hour=sum(rates) if rates else None,
        windows={
            "avg_speed_kmh": area.window(Kind.TRAFFIC, recent, count),
            "congestion": area.window(Kind.TRAFFIC, recent, weight, referenced),
            "vehicles_per_hour": area.window(
                Kind.TRAFFIC,
                (at - FLOW_WINDOW, at),
                sum(row["vehicle_count_n"] for row in counts),
            ),
        },
    )


# --- energy ------------------------------------------------------------------------------------


async def _energy(
    conn: Connection, areas: list[_Area], meters: list[Device], at: datetime
) -> dict[str, EnergySummary]:
    """Every area's energy figures; ``meters``: all the areas' meters, each read once."""
    recent = (at - RECENT, at)
    power = await _per_device(conn, Kind.ENERGY, meters, ["power_kw"], recent)
    today = (DAY.floor(at), at)
    consumed = await _area_totals(conn, Kind.ENERGY, ("energy_kwh",), areas, today)
    summaries = {}
    for area in areas:
        rows = [power[d] for d in area.ids(Kind.ENERGY) if d in power]
        # A district's load is the sum of its meters' mean power; a silent meter adds nothing.
        means = [row["power_kw_sum"] / row["power_kw_n"] for row in rows if row["power_kw_n"]]
        totals = consumed.get(area.name)
        consumption = None
        if totals is not None and totals["energy_kwh_n"]:
            consumption = totals["energy_kwh_increase"] or 0.0
        summaries[area.name] = EnergySummary(
            load_kw=sum(means) if means else None,
            consumption_today_kwh=consumption,
            windows={
                "load_kw": area.window(Kind.ENERGY, recent, sum(row["power_kw_n"] for row in rows)),
                "consumption_today_kwh": area.window(
                    Kind.ENERGY, today, totals["readings"] if totals else 0
                ),
            },
        )
    return summaries


# --- areas -------------------------------------------------------------------------------------


async def _summaries(
    conn: Connection,
    districts: list[District | None],
    at: datetime,
    default_interval_s: float,
) -> list[AreaSummary]:
    """The summaries of the areas named (None: the city), in that order, read together."""
    only = districts[0] if len(districts) == 1 else None
    devices = {kind: await registry.devices_of(conn, kind, only) for kind in Kind}
    areas = _areas(devices, districts, default_interval_s)
    # Every area's devices are among those read here: each device's figures are read once.
    roads = await _roads(conn, devices[Kind.TRAFFIC], at)
    air = await _air(conn, areas, at)
    energy = await _energy(conn, areas, devices[Kind.ENERGY], at)
    return [
        AreaSummary(
            district=area.district,
            at=at,
            air=air[area.name],
            traffic=_traffic(area, roads, at),
            energy=energy[area.name],
        )
        for area in areas
    ]


async def district_summary(
    pool: asyncpg.Pool, district: District, at: datetime, default_interval_s: float
) -> AreaSummary:
    """AQI, congestion and energy load of one district at ``at``."""
    async with pool.acquire() as conn:
        (area,) = await _summaries(conn, [district], at, default_interval_s)
        return area


async def city_summary(pool: asyncpg.Pool, at: datetime, default_interval_s: float) -> CitySummary:
    """The same KPIs city-wide (all devices), and per district."""
    async with pool.acquire() as conn:
        city, *districts = await _summaries(conn, [None, *District], at, default_interval_s)
    return CitySummary(**city.model_dump(), districts=districts)
