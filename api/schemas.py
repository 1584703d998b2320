"""Request and response models of the REST API (the registry's own models live in devices/)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from core.timestamps import BucketTimestamp, UtcTimestamp
from devices.contract import District, Kind

# A metric value as stored: integer metrics stay integers, a metric the reading lacked is null.
MetricValue = int | float | None
Values = dict[str, MetricValue]

_SPACE_BEFORE_OFFSET: Final = re.compile(r" (\d{2}:?\d{2})$")


def _restore_plus(value: Any) -> Any:
    # An unencoded "+05:00" in a query string arrives as " 05:00"; put the sign back.
    if isinstance(value, str):
        return _SPACE_BEFORE_OFFSET.sub(r"+\1", value)
    return value


def _require_offset(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp needs a UTC offset (RFC 3339), e.g. 2025-01-31T00:00:00+05:00")
    return value


# Query timestamps: RFC 3339 with an offset; a naive time would be ambiguous across zones.
AwareDatetime = Annotated[datetime, BeforeValidator(_restore_plus), AfterValidator(_require_offset)]


class ErrorBody(BaseModel):
    """The shape of every error response."""

    error: str = Field(examples=["device_not_found"])
    detail: Any = Field(default=None, examples=["no device 'gate-air-001'"])


class EdgeConsumer(BaseModel):
    consumer: str | None = Field(description="the ingest replica (its client id)")
    unacknowledged: int = Field(description="deliveries it holds, not yet committed")
    prefetch: int | None = None


class EdgeQueue(BaseModel):
    """The city edge's ingest queue as the cluster reports it (statistics lag by a second)."""

    queue: str
    ready: int = Field(description="readings waiting for an ingest replica: the backlog")
    unacknowledged: int = Field(description="readings delivered to replicas, not yet committed")
    leader: str | None = Field(description="the node leading the quorum queue")
    members_online: int = Field(description="replicas of the queue on running nodes")
    consumers: list[EdgeConsumer]


class Health(BaseModel):
    status: str = Field(
        examples=["ok"],
        description="ok, or degraded when one of the primary and the read replica is away",
    )
    database: str = Field(examples=["ok"], description="the primary: ok or unavailable")
    read_database: str = Field(
        default="primary",
        examples=["ok"],
        description="where lag-tolerant reads go: primary (no DATABASE_READ_URL), or the "
        "replica's state: ok or unavailable",
    )
    replica_lag_s: float | None = Field(
        default=None,
        description="seconds the read replica's replay is behind (0: it has replayed all it "
        "received); null without a replica or when it is away",
    )
    timescaledb: str = Field(examples=["2.17.2"])
    edge: str = Field(description="the broker devices reach: mosquitto or rabbitmq")
    edge_queue: EdgeQueue | None = Field(
        default=None, description="city edge only: the ingest queue's backlog"
    )
    edge_error: str | None = Field(
        default=None, description="city edge only: why the queue could not be read"
    )


class LatestReading(BaseModel):
    device_id: str
    kind: Kind
    district: District
    ts: UtcTimestamp = Field(description="reading time reported by the device")
    received_at: UtcTimestamp = Field(description="when ingest stored the reading")
    values: Values


class LatestList(BaseModel):
    items: list[LatestReading]


class RawReading(BaseModel):
    ts: UtcTimestamp
    received_at: UtcTimestamp
    values: Values


class ReadingsPage(BaseModel):
    items: list[RawReading]
    next_cursor: str | None = Field(
        description="pass as ``cursor`` for the next page; null on the last page"
    )


class AggregateFn(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    INCREASE = "increase"  # cumulative registers (energy_kwh): consumption, meter resets handled
    RATE = "rate"  # window counts (vehicle_count, heavy_vehicle_count): vehicles per hour


class AggregateScope(StrEnum):
    DEVICE = "device"
    DISTRICT = "district"
    CITY = "city"


class AggregatePoint(BaseModel):
    bucket_start: BucketTimestamp = Field(
        description="UTC (`Z`) for buckets of seconds, minutes and hours; Almaty's offset"
        " (`+05:00`) for the city calendar's d, w and mo buckets, which start at local midnight"
    )
    value: MetricValue = Field(description="null when no reading in the bucket has the metric")
    count: int = Field(description="readings stored in the bucket")
    completeness: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="fraction in [0, 1]: readings stored (unique per device and ts, so a"
        " redelivery counts once) against those expected from the devices' reading periods"
        " (metadata.expected_interval_s) over the part of the bucket inside [from, to), capped"
        " at 1; null for a scope without devices",
    )
    gap: bool = Field(default=False, description="true for a bucket filled in by fill=true")


class AggregateSeries(BaseModel):
    scope: AggregateScope = AggregateScope.DEVICE
    device_id: str | None = None
    district: District | None = None
    kind: Kind | None = None
    devices: int = Field(default=1, description="devices the aggregate covers")
    metric: str
    unit: str
    bucket: str
    fn: AggregateFn
    tier: str = Field(default="raw", description="the rollup tier that answered (raw, 1m, 1h, 1d)")
    items: list[AggregatePoint] = Field(
        description="buckets holding readings, oldest first (every bucket with fill=true)"
    )


class Rejection(BaseModel):
    received_at: UtcTimestamp
    topic: str
    kind: str | None
    device_id: str | None
    reason: str
    detail: str
    payload: str = Field(description="the raw payload as UTF-8, invalid bytes replaced")
    payload_base64: str | None = Field(
        description="the exact bytes in base64, only when they are not valid UTF-8"
    )


class RejectionList(BaseModel):
    items: list[Rejection]


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open reading-time window ``[start, end)``."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """``fn(metric)`` per ``bucket`` over ``window``; ``fill`` lists empty buckets too."""

    metric: str
    bucket: str
    fn: AggregateFn
    window: TimeRange
    fill: bool


class FigureWindow(BaseModel):
    """The span a figure describes, and how much of it the data covers."""

    start: UtcTimestamp = Field(description="the window's start (inclusive)")
    end: UtcTimestamp = Field(description="the window's end (exclusive): the summary's `at`")
    seconds: float = Field(description="the window's length")
    coverage: float | None = Field(
        ge=0,
        le=1,
        description="readings stored in the window against those the area's devices are"
        " expected to send in it (metadata.expected_interval_s), capped at 1: 0.02 is a 24 h"
        " figure computed from about half an hour of data; null without devices",
    )


class PollutantIndex(BaseModel):
    average: float = Field(description="µg/m³ over the pollutant's averaging window")
    window_hours: float
    sub_index: int
    window: FigureWindow


class AirSummary(BaseModel):
    aqi: int | None = Field(description="US EPA AQI: the highest sub-index; null without data")
    category: str | None = Field(examples=["moderate"])
    dominant: str | None = Field(description="the pollutant with the highest sub-index")
    pollutants: dict[str, PollutantIndex]
    windows: dict[str, FigureWindow] = Field(
        description="per figure (`aqi`): the dominant pollutant's averaging window and its coverage"
    )


class TrafficSummary(BaseModel):
    avg_speed_kmh: float | None = Field(
        description="mean of the area's speed readings over the last 15 minutes"
    )
    free_flow_kmh: float | None = Field(
        description="the free-flow speed of the roads that reported in the last 15 minutes,"
        " weighted by their readings: each road's configured metadata.free_flow_kmh, else"
        " the 85th percentile of its hourly mean speeds over 7 days once it has 24 of them;"
        " null when none of them has one"
    )
    congestion: float | None = Field(
        description="1 - speed / free-flow speed over the roads with a free-flow speed,"
        " 0 (free) to 1 (standing); null without such a road reporting"
    )
    congestion_devices: int = Field(
        description="roads the congestion covers: reported in the last 15 minutes and have a"
        " free-flow speed (configured or learned)"
    )
    vehicles_per_hour: float | None = Field(
        description="the area's flow over the last hour: each detector's vehicles per hour"
        " (sum of vehicle_count * 3600 / sum of interval_s), summed"
    )
    windows: dict[str, FigureWindow] = Field(
        description="per figure (`avg_speed_kmh`, `congestion`, `vehicles_per_hour`)"
    )


class EnergySummary(BaseModel):
    load_kw: float | None = Field(
        description="sum over meters of each one's mean power over the last 15 minutes"
    )
    consumption_today_kwh: float | None = Field(
        description="energy_kwh increase since midnight in Almaty, meter resets handled"
    )
    windows: dict[str, FigureWindow] = Field(
        description="per figure (`load_kw`, `consumption_today_kwh`)"
    )


class AreaSummary(BaseModel):
    district: District | None = Field(description="null for the whole city")
    at: UtcTimestamp = Field(description="the moment the figures are for (each window's end)")
    air: AirSummary
    traffic: TrafficSummary
    energy: EnergySummary


class CitySummary(AreaSummary):
    districts: list[AreaSummary]
