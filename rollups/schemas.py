"""The rollup tiers: their names, widths and columns, derived from the metric contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from devices.contract import METRICS, METRICS_BY_NAME, Kind, Metric
from rollups.buckets import DAY, HOUR, MINUTE, Bucket


class Tier(StrEnum):
    """Where an aggregate is read from; ``RAW`` is the readings themselves."""

    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"
    DAY = "1d"


@dataclass(frozen=True, slots=True)
class TierSpec:
    bucket: Bucket  # the day tier's buckets start at Almaty midnight
    source: Tier  # the tier it is recomputed from


TIERS: Final[dict[Tier, TierSpec]] = {
    Tier.MINUTE: TierSpec(MINUTE, Tier.RAW),
    Tier.HOUR: TierSpec(HOUR, Tier.MINUTE),
    Tier.DAY: TierSpec(DAY, Tier.HOUR),
}
ROLLED_TIERS: Final = (Tier.MINUTE, Tier.HOUR, Tier.DAY)
# Area tiers (per district and the city, pre-summed over devices) at every width, the minute one
# too: it answers the partial hours at a wide query's edges, which would otherwise be an hour of
# every device's raw readings at each end.
AREA_TIERS: Final = (Tier.MINUTE, Tier.HOUR, Tier.DAY)
CITY_AREA: Final = "city"

# Cumulative registers: consumption per bucket is the increase, a drop is a meter reset.
CUMULATIVE: Final[frozenset[tuple[Kind, str]]] = frozenset({(Kind.ENERGY, "energy_kwh")})
# Counts over ``interval_s`` windows: per bucket their sum, as a rate per hour sum/sum(interval_s).
WINDOW_COUNTS: Final[frozenset[tuple[Kind, str]]] = frozenset(
    {(Kind.TRAFFIC, "vehicle_count"), (Kind.TRAFFIC, "heavy_vehicle_count")}
)
WINDOW_METRIC: Final = "interval_s"


def rollup_table(kind: Kind, tier: Tier) -> str:
    """Name of a kind's rollup hypertable; the only place the mapping is spelled."""
    if tier is Tier.RAW:
        raise ValueError("raw readings have no rollup table")
    return f"{kind.value}_rollup_{tier.value}"


def area_table(kind: Kind, tier: Tier) -> str:
    """Name of a kind's area rollup hypertable (rows per district and for the city)."""
    if tier not in AREA_TIERS:
        raise ValueError(f"no area tier of {tier.value}")
    return f"{kind.value}_area_rollup_{tier.value}"


def is_cumulative(kind: Kind, metric: Metric) -> bool:
    return (kind, metric.name) in CUMULATIVE


def tier_columns(kind: Kind, metrics: tuple[Metric, ...] | None = None) -> tuple[str, ...]:
    """The aggregate columns of a kind's tier tables (after device_id and bucket)."""
    columns = ["readings"]
    for metric in metrics if metrics is not None else METRICS[kind]:
        columns += [f"{metric.name}_{part}" for part in ("n", "min", "max", "sum")]
        if is_cumulative(kind, metric):
            columns += [f"{metric.name}_{part}" for part in ("first", "last", "inc")]
    return tuple(columns)


def kind_of_metric(name: str) -> Kind | None:
    """Metric names are unique across kinds, so a metric says which kind it belongs to."""
    for kind, metrics in METRICS_BY_NAME.items():
        if name in metrics:
            return kind
    return None


def area_columns(kind: Kind, metrics: tuple[Metric, ...] | None = None) -> tuple[str, ...]:
    """The aggregate columns of a kind's area tier tables (after area and bucket): count, min,
    max and sum per metric; a cumulative register keeps ``<m>_increase``, the increase of its
    devices' readings in the bucket, each counted from the device's previous reading."""
    columns = ["readings"]
    for metric in metrics if metrics is not None else METRICS[kind]:
        columns += [f"{metric.name}_{part}" for part in ("n", "min", "max", "sum")]
        if is_cumulative(kind, metric):
            columns.append(f"{metric.name}_increase")
    return tuple(columns)


@dataclass(frozen=True, slots=True)
class Plan:
    """Which tier answers, over which aligned middle [tier_start, tier_end); raw fills the rest."""

    tier: Tier
    tier_start: datetime
    tier_end: datetime
    part_width: str
    query_width: str
    timezone: str | None
    # Around an hour plan's middle its minute-aligned bounds, around a day plan's its hour-
    # then minute-aligned ones: area reads take the partial days and hours at the edges from
    # the finer area tiers (so less than a minute of raw each side).
    outer: tuple[datetime, ...] = ()
