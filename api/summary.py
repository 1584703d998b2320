"""City KPIs per district and for the whole city: air-quality index, traffic congestion and
energy load. Each figure states its window and how much of it the stored readings cover, so a
24 h figure computed from half an hour of data says so.

Long windows (the AQI's 8 and 24 hours, today's consumption) are read through the exact tiered
aggregates; the short ones (15 minutes, an hour) per device from raw readings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from api import repository
from api.aggregates import readings_per_second
from api.aqi import POLLUTANTS, category
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
from rollups.buckets import DAY, HOUR, Bucket

RECENT: Final = timedelta(minutes=15)
FLOW_WINDOW: Final = timedelta(hours=1)
# A road's free-flow speed, set when it is commissioned (the simulator registers its own).
FREE_FLOW_KEY: Final = "free_flow_kmh"
# A road without one has its free-flow speed learned once a day of history allows: the 85th
# percentile of its hourly mean speeds over the last 7 days (night hours run free).
LEARNING_WINDOW: Final = timedelta(days=7)
LEARNING_MIN_HOURS: Final = 24
LEARNING_PERCENTILE: Final = 0.85


@dataclass(frozen=True, slots=True)
class _Scope:
    """The devices of one kind in the area, and the reading period assumed where a device
    declares none."""

    devices: list[Device]
    default_interval_s: float

    @property
    def ids(self) -> list[str]:
        return [device.device_id for device in self.devices]

    def window(
        self, start: datetime, end: datetime, readings: float, devices: Sequence[Device] = ()
    ) -> FigureWindow:
        """``[start, end)`` with the share of the expected readings that are stored."""
        seconds = max((end - start).total_seconds(), 0.0)
        expected = readings_per_second(list(devices or self.devices), self.default_interval_s)
        expected *= seconds
        coverage = round(min(readings / expected, 1.0), 4) if expected > 0 else None
        return FigureWindow(start=start, end=end, seconds=seconds, coverage=coverage)


async def _rows(
    conn: Connection,
    kind: Kind,
    ids: list[str],
    *,
    metric: str,
    fn: str,
    bucket: Bucket,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    if not ids or start >= end:
        return []
    plan = rollups.plan(bucket, start, end)
    return await rollups.series(
        conn, kind, metrics=(metric,), fn=fn, device_ids=ids, the_plan=plan, start=start, end=end
    )


async def _mean(
    conn: Connection, scope: _Scope, metric: str, window: tuple[datetime, datetime]
) -> tuple[float | None, int]:
    """The mean of an air metric over [start, end), sum over count, both exact; and the
    count."""
    start, end = window
    ids = scope.ids
    sums = await _rows(
        conn, Kind.AIR, ids, metric=metric, fn="sum", bucket=HOUR, start=start, end=end
    )
    counts = await _rows(
        conn, Kind.AIR, ids, metric=metric, fn="count", bucket=HOUR, start=start, end=end
    )
    total = sum(row["value"] for row in sums if row["value"])
    count = sum(row["value"] for row in counts if row["value"])
    return (total / count if count else None), int(count)


async def _air(conn: Connection, scope: _Scope, at: datetime) -> AirSummary:
    pollutants: dict[str, PollutantIndex] = {}
    for pollutant in POLLUTANTS:
        start = at - pollutant.window
        average, count = await _mean(conn, scope, pollutant.metric, (start, at))
        if average is not None:
            pollutants[pollutant.metric] = PollutantIndex(
                average=average,
                window_hours=pollutant.window.total_seconds() / 3600,
                sub_index=pollutant.sub_index(average),
                window=scope.window(start, at, count),
            )
    if not pollutants:
        longest = max(pollutant.window for pollutant in POLLUTANTS)
        return AirSummary(
            aqi=None,
            category=None,
            dominant=None,
            pollutants={},
            windows={"aqi": scope.window(at - longest, at, 0)},
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


def _free_flow(device: Device) -> float | None:
    value = device.metadata.get(FREE_FLOW_KEY) if isinstance(device.metadata, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


async def _traffic(conn: Connection, scope: _Scope, at: datetime) -> TrafficSummary:
    speed_metric = METRICS_BY_NAME[Kind.TRAFFIC]["avg_speed_kmh"]
    recent = (at - RECENT, at)
    speeds = await repository.per_device_totals(
        conn, Kind.TRAFFIC, scope.ids, [speed_metric], window=recent
    )
    count = sum(row["avg_speed_kmh_n"] for row in speeds)
    total = sum(row["avg_speed_kmh_sum"] or 0.0 for row in speeds)
    # Congestion compares each road with its own free-flow speed, weighted by its readings:
    # 1 - (sum of speeds) / (sum of the free-flow speeds those readings had).
    free_flows = await _free_flows(conn, scope, at)
    referenced = [d for d in scope.devices if d.device_id in free_flows]
    reference, observed, weight, roads = 0.0, 0.0, 0, 0
    for row in speeds:
        free_flow = free_flows.get(row["device_id"])
        if free_flow is None or not row["avg_speed_kmh_n"]:
            continue
        reference += free_flow * row["avg_speed_kmh_n"]
        observed += row["avg_speed_kmh_sum"]
        weight += row["avg_speed_kmh_n"]
        roads += 1
    congestion = round(min(max(1 - observed / reference, 0.0), 1.0), 4) if reference else None
    flow, flow_readings = await _flow(conn, scope, at)
    return TrafficSummary(
        avg_speed_kmh=total / count if count else None,
        free_flow_kmh=reference / weight if weight else None,
        congestion=congestion,
        congestion_devices=roads,
        vehicles_per_hour=flow,
        windows={
            "avg_speed_kmh": scope.window(*recent, count),
            "congestion": scope.window(*recent, weight, referenced),
            "vehicles_per_hour": scope.window(at - FLOW_WINDOW, at, flow_readings),
        },
    )


async def _free_flows(conn: Connection, scope: _Scope, at: datetime) -> dict[str, float]:
    """Each road's free-flow speed: configured, else learned from a day or more of history;
    a road with neither has none (and stays out of the congestion)."""
    configured = {
        device.device_id: free_flow
        for device in scope.devices
        if (free_flow := _free_flow(device)) is not None
    }
    unset = [device_id for device_id in scope.ids if device_id not in configured]
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


async def _flow(conn: Connection, scope: _Scope, at: datetime) -> tuple[float | None, int]:
    """The area's vehicles per hour over the last hour: each detector's rate, summed (the
    aggregates' ``fn=rate`` over an area); and the readings that carried a count."""
    metrics = [METRICS_BY_NAME[Kind.TRAFFIC][name] for name in ("vehicle_count", "interval_s")]
    rows = await repository.per_device_totals(
        conn, Kind.TRAFFIC, scope.ids, metrics, window=(at - FLOW_WINDOW, at)
    )
    rates = [
        row["vehicle_count_sum"] * 3600 / row["interval_s_sum"]
        for row in rows
        if row["vehicle_count_n"] and row["interval_s_sum"]
    ]
    return (sum(rates) if rates else None), sum(row["vehicle_count_n"] for row in rows)


async def _energy(conn: Connection, scope: _Scope, at: datetime) -> EnergySummary:
    recent = (at - RECENT, at)
    power = await repository.per_device_totals(
        conn, Kind.ENERGY, scope.ids, [METRICS_BY_NAME[Kind.ENERGY]["power_kw"]], window=recent
    )
    # A district's load is the sum of its meters' mean power; a silent meter adds nothing.
    means = [row["power_kw_sum"] / row["power_kw_n"] for row in power if row["power_kw_n"]]
    midnight = DAY.floor(at)
    today = await _rows(
        conn,
        Kind.ENERGY,
        scope.ids,
        metric="energy_kwh",
        fn="increase",
        bucket=DAY,
        start=midnight,
        end=at,
    )
    values = [row["value"] for row in today if row["value"] is not None]
    return EnergySummary(
        load_kw=sum(means) if means else None,
        consumption_today_kwh=sum(values) if values else None,
        windows={
            "load_kw": scope.window(*recent, sum(row["power_kw_n"] for row in power)),
            "consumption_today_kwh": scope.window(
                midnight, at, sum(row["readings"] for row in today)
            ),
        },
    )


async def _area(
    conn: Connection, district: District | None, at: datetime, default_interval_s: float
) -> AreaSummary:
    scopes = {
        kind: _Scope(await registry.devices_of(conn, kind, district), default_interval_s)
        for kind in Kind
    }
    return AreaSummary(
        district=district,
        at=at,
        air=await _air(conn, scopes[Kind.AIR], at),
        traffic=await _traffic(conn, scopes[Kind.TRAFFIC], at),
        energy=await _energy(conn, scopes[Kind.ENERGY], at),
    )


async def district_summary(
    pool: asyncpg.Pool, district: District, at: datetime, default_interval_s: float
) -> AreaSummary:
    """AQI, congestion and energy load of one district at ``at``."""
    async with pool.acquire() as conn:
        return await _area(conn, district, at, default_interval_s)


async def city_summary(pool: asyncpg.Pool, at: datetime, default_interval_s: float) -> CitySummary:
    """The same KPIs city-wide (all devices), and per district."""
    async with pool.acquire() as conn:
        city = await _area(conn, None, at, default_interval_s)
        districts = [await _area(conn, d, at, default_interval_s) for d in District]
    return CitySummary(**city.model_dump(), districts=districts)
