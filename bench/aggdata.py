"""The aggregates benchmark's data, generated inside the database with ``generate_series`` and
set-based SQL: a fleet, raw readings at one a minute, and device tiers behind them.

Values follow the city's day and year so aggregates mean something: traffic peaks at 08:30 and
18:00 (Almaty), energy meters draw most in the afternoon and their register only grows, and air
pollutants rise with traffic and in winter smog. Each metric is a closed-form mean of time plus
noise, so the hour tiers of the months before raw's window can be written directly from the same
means, with the day tier then rolled up from them by the project's own SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from api.summary import FREE_FLOW_KEY
from devices.contract import METRICS, District, Kind, Metric, readings_table
from rollups.schemas import Tier, is_cumulative, rollup_table, tier_columns

FLEET_TABLE: Final = "bench_fleet"
FREE_FLOW_KMH: Final = 62  # a road's speed with no traffic


# Per timestamp ``ts`` of a series, computed once (not once per device): x hours since the epoch,
# h the Almaty hour of day, s the season (1 in mid-January, -1 in mid-July), f the traffic level
# (0.08 at night to about 1.1 at the peaks).
def _times(step: str, shift_h: float = 0.0) -> str:
    x = f"extract(epoch FROM ts)::double precision / 3600 + {shift_h}"
    h = "x + 5 - 24 * floor((x + 5) / 24)"
    f = (
        "0.08 + exp(-((h - 8.5) ^ 2) / 3) + 0.9 * exp(-((h - 18) ^ 2) / 4)"
        " + 0.3 * exp(-((h - 13) ^ 2) / 8)"
    )
    return (
        f"WITH t AS MATERIALIZED (SELECT ts, x, h, s, {f} AS f FROM ("
        f" SELECT ts, x, {h} AS h, cos(2 * pi() * (x / 24 - 15) / 365.25) AS s FROM ("
        f"  SELECT ts, {x} AS x FROM generate_series($1::timestamptz,"
        f"   $2::timestamptz - INTERVAL '{step}', INTERVAL '{step}') AS ts) AS a) AS b)"
    )


# The register's hours since 2025-01-01, so values stay positive and grow from there.
_ENERGY_ORIGIN_H: Final = 482_136.0
_WINTER = "(0.5 * (1 + t.s))"
_DAY_WAVE = "sin(2 * pi() * (t.h - {shift}) / 24)"


def register_at(x: str) -> str:
    """The energy register at ``x`` hours since the epoch: base + P * (x - x0 - 0.45 * 12/pi *
    cos(...)), whose derivative is the mean power_kw (> 0), so it only grows."""
    return (
        f"(10000 * d.seed + 10 + (20 + 180 * d.seed) * ({x} - {_ENERGY_ORIGIN_H}"
        f" - 0.45 * 12 / pi() * cos(2 * pi() * ({x} - 3) / 24)))"
    )


def _mean(kind: Kind, name: str) -> str:
    return _MEANS[kind][name].replace("{register}", register_at("t.x"))


def _noise(spread: float) -> str:
    return f"(1 + {spread} * (random() - 0.5))"


# Each metric's mean at the timestamp (``d`` is the fleet row: seed in [0, 1), scale 0.5-1.5).
_MEANS: Final[dict[Kind, dict[str, str]]] = {
    Kind.TRAFFIC: {
        "vehicle_count": "t.f * 30 * d.scale",
        "interval_s": "60.0",
        "avg_speed_kmh": f"greatest(5, {FREE_FLOW_KMH} - 30 * t.f)",
        "occupancy_pct": "least(95, 4 + 55 * t.f * d.scale)",
        "heavy_vehicle_count": "t.f * 2.5 * d.scale",
    },
    Kind.ENERGY: {
        # E(x) = base + P * (x - x0 - 0.45 * 12/pi * cos(...)): its derivative is power_kw > 0.
        "energy_kwh": "{register}",
        "power_kw": f"(20 + 180 * d.seed) * (1 + 0.45 * {_DAY_WAVE.format(shift=8)})",
        "voltage_v": f"230 + 4 * {_DAY_WAVE.format(shift=2)}",
        "current_a": (
            f"(20 + 180 * d.seed) * (1 + 0.45 * {_DAY_WAVE.format(shift=8)}) * 1000 / (3 * 230)"
        ),
        "power_factor": "0.9 + 0.08 * d.seed",
    },
    Kind.AIR: {
        "pm2_5": f"(8 + 25 * t.f + 60 * {_WINTER} * (0.6 + 0.4 * cos(2 * pi() * (t.h - 1) / 24)))"
        " * d.scale",
        "pm10": f"1.6 * (8 + 25 * t.f + 60 * {_WINTER} * (0.6 + 0.4 * cos(2 * pi() * (t.h - 1)"
        " / 24))) * d.scale",
        "no2": "10 + 45 * t.f",
        "so2": f"3 + 12 * {_WINTER}",
        "o3": f"20 + 70 * (1 - {_WINTER}) * greatest(0, {_DAY_WAVE.format(shift=7)})",
        "co": f"300 + 600 * t.f + 500 * {_WINTER}",
        "temperature_c": f"10 - 16 * t.s + 6 * {_DAY_WAVE.format(shift=9)}",
        "humidity_pct": f"55 + 15 * t.s - 15 * {_DAY_WAVE.format(shift=9)}",
        "pressure_hpa": "915 + 6 * t.s",
    },
}
# Readings scatter around the mean; the register and the counting window do not.
_SPREAD: Final = {"energy_kwh": 0.0, "interval_s": 0.0, "voltage_v": 0.01, "power_factor": 0.02}
_LIMITS: Final = {
    "occupancy_pct": (0, 100),
    "humidity_pct": (5, 100),
    "power_factor": (-1, 1),
}


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    kind: Kind
    district: District


def fleet(count: int, prefix: str = "bench") -> list[Device]:
    """A third of each kind, spread over the four districts."""
    kinds, districts = list(Kind), list(District)
    return [
        Device(f"{prefix}-{kinds[n % 3].value}-{n:05d}", kinds[n % 3], districts[(n // 3) % 4])
        for n in range(count)
    ]


def create_fleet(count: int, prefix: str = "bench") -> list[str]:
    """Statements that register the fleet and keep each device's generator parameters."""
    return [
        f"CREATE TABLE {FLEET_TABLE} (device_id text PRIMARY KEY, kind text NOT NULL,"
        " district text NOT NULL, seed double precision NOT NULL,"
        " scale double precision NOT NULL, stagger interval NOT NULL)",
        f"INSERT INTO {FLEET_TABLE}"
        f" SELECT format('{prefix}-%s-%s', (ARRAY['traffic','energy','air'])[n % 3 + 1],"
        "  lpad(n::text, 5, '0')),"
        " (ARRAY['traffic','energy','air'])[n % 3 + 1],"
        " (ARRAY['gate','golden','growing','green'])[(n / 3) % 4 + 1],"
        " (n * 0.618034) % 1, 0.5 + ((n * 0.381966) % 1),"
        # Devices report at staggered seconds, not all on the same instant.
        " make_interval(secs => n % 59)"
        f" FROM generate_series(0, {count - 1}) AS n",
        # Roads are commissioned with their free-flow speed, as the simulator's are: the
        # speed the generator's roads run at with no traffic.
        "INSERT INTO devices (device_id, kind, district, status, metadata)"
        " SELECT device_id, kind, district, 'online', CASE kind WHEN 'traffic'"
        f" THEN jsonb_build_object('{FREE_FLOW_KEY}', {FREE_FLOW_KMH}) ELSE '{{}}' END"
        f" FROM {FLEET_TABLE}",
        f"ANALYZE {FLEET_TABLE}",
    ]


def _value(kind: Kind, metric: Metric, mean: str, noise: bool) -> str:
    spread = _SPREAD.get(metric.name, 0.4) if noise else 0.0
    value = f"({mean}) * {_noise(spread)}" if spread else f"({mean})"
    low, high = _LIMITS.get(metric.name, (0, None))
    if metric.name != "temperature_c":
        value = f"greatest({low}, {value})"
    if high is not None:
        value = f"least({high}, {value})"
    return f"round({value})::integer" if metric.integer else value


def raw_day(kind: Kind) -> str:
    """Insert one reading a minute for every device of ``kind`` in [$1, $2)."""
    metrics = METRICS[kind]
    names = ", ".join(m.name for m in metrics)
    values = ", ".join(_value(kind, m, _mean(kind, m.name), True) for m in metrics)
    return (
        f"{_times('1 minute')} INSERT INTO {readings_table(kind)} (device_id, ts, received_at,"
        f" {names}) SELECT d.device_id, t.ts + d.stagger, t.ts + d.stagger, {values}"
        f" FROM t CROSS JOIN {FLEET_TABLE} AS d WHERE d.kind = '{kind.value}'"
    )


def minutes_from_raw(kind: Kind) -> str:
    """The 1-minute tier of [$1, $2) as a projection of raw: with one reading a minute each part
    holds exactly that reading (count 1, min = max = sum = first = last, no increase inside),
    which is what ``rollups.sql.from_readings`` computes for it, at a fraction of the cost."""
    parts = ["1"]
    for m in METRICS[kind]:
        c = m.name
        parts += [f"({c} IS NOT NULL)::integer", c, c, c]
        if is_cumulative(kind, m):
            parts += [c, c, f"CASE WHEN {c} IS NOT NULL THEN 0::double precision END"]
    columns = ", ".join(tier_columns(kind))
    return (
        f"INSERT INTO {rollup_table(kind, Tier.MINUTE)} (device_id, bucket, {columns})"
        f" SELECT device_id, time_bucket(INTERVAL '1 minute', ts), {', '.join(parts)}"
        f" FROM {readings_table(kind)} WHERE ts >= $1 AND ts < $2"
    )


def _tier_parts(kind: Kind, metric: Metric, readings: int) -> list[str]:
    """A generated bucket's columns for one metric: ``readings`` minutes around its mean (t.x is
    the bucket's middle, so its first reading is half a bucket before)."""
    mean = _mean(kind, metric.name)
    if is_cumulative(kind, metric):
        half = readings / 120
        first = register_at(f"(t.x - {half})")
        last = register_at(f"(t.x + {(readings - 1) / 60} - {half})")
        total = f"{readings} * ({first} + {last}) / 2"
        return [str(readings), first, last, total, first, last, f"{last} - {first}"]
    value = _value(kind, metric, mean, True).replace("round(", "(").replace(")::integer", ")")
    low, high = f"{value} * 0.7", f"{value} * 1.3"
    total = f"{readings} * {value}"
    if metric.integer:
        low, high, total = f"floor({low})::integer", f"ceil({high})::integer", f"round({total})"
    if metric.name in _LIMITS and _LIMITS[metric.name][1] is not None:
        high = f"least({_LIMITS[metric.name][1]}, {high})"
    return [str(readings), low, high, total]


_GENERATED: Final = {Tier.HOUR: ("1 hour", 60), Tier.DAY: ("1 day", 1440)}


def tier_generated(kind: Kind, tier: Tier) -> str:
    """Insert ``tier`` (hour or Almaty day) parts of every device of ``kind`` for the buckets
    starting in [$1, $2) (aligned), as if rolled up from one reading a minute: the months before
    raw's window, where raw itself is gone."""
    width, readings = _GENERATED[tier]
    parts = [str(readings)]
    for metric in METRICS[kind]:
        parts += _tier_parts(kind, metric, readings)
    columns = ", ".join(tier_columns(kind))
    return (
        f"{_times(width, readings / 120)} INSERT INTO {rollup_table(kind, tier)}"
        f" (device_id, bucket, {columns}) SELECT d.device_id, t.ts, {', '.join(parts)}"
        f" FROM t CROSS JOIN {FLEET_TABLE} AS d WHERE d.kind = '{kind.value}'"
    )


def spans(start: datetime, end: datetime, step: timedelta) -> Iterator[tuple[datetime, datetime]]:
    cursor = start
    while cursor < end:
        upper = min(cursor + step, end)
        yield cursor, upper
        cursor = upper


def fleet_ids(devices: Sequence[Device], kind: Kind, district: District | None) -> list[str]:
    return [
        d.device_id
        for d in devices
        if d.kind is kind and (district is None or d.district is district)
    ]
