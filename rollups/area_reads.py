"""The SQL text of district and city reads over the area tiers (rollups/area_sql.py keeps them).

A read covers [$2, $5) with segments, each answered once for every member of the areas $1:
- raw readings for the unaligned edges, a time-range scan joined to the members (not one probe
  per device), labelled with parts of width $6;
- a tier segment per aligned stretch, coarsest in the middle: for a day plan minutes, hours,
  days [$3, $4), hours, minutes; for an hour plan minutes, hours [$3, $4), minutes (the outer
  bounds are parameters after the others); so a partial day or hour at an edge comes from the
  finer area tiers, and raw covers less than a minute at each end.
In a tier segment, clean area buckets come from the area tier; an area bucket holding a dirty
minute of a member from its members' device tier rows, and their dirty buckets from raw.
Without the area tier ("device tiers": a membership change waits for the worker, or the width
is finer than an hour) every bucket of a segment is read from the device tier that way.
Parameters besides: $7 query bucket width, $8 time zone (calendar buckets only), then the
outer bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.contract import Kind, Metric, readings_table
from rollups.area_sql import members, previous_last
from rollups.schemas import (
    TIERS,
    WINDOW_METRIC,
    Tier,
    area_columns,
    area_table,
    is_cumulative,
    rollup_table,
)
from rollups.sql import check_metrics, delta, part_aggregates, previous_values, sum_of


@dataclass(frozen=True, slots=True)
class Segment:
    tier: Tier  # RAW: read from the readings
    lower: str  # parameter text of its bounds
    upper: str


def segments(tier: Tier, outer: tuple[str, ...]) -> tuple[Segment, ...]:
    """The segments of a plan answered by ``tier`` (see the module's docstring); ``outer`` names
    the parameters of the finer tiers' bounds around [$3, $4): an hour plan's minute-aligned
    (start, end), a day plan's hour-aligned then minute-aligned ones."""
    if tier is Tier.RAW:
        return (Segment(Tier.RAW, "$2", "$3"), Segment(Tier.RAW, "$4", "$5"))
    if tier is Tier.MINUTE:
        return (
            Segment(Tier.RAW, "$2", "$3"),
            Segment(Tier.MINUTE, "$3", "$4"),
            Segment(Tier.RAW, "$4", "$5"),
        )
    if tier is Tier.HOUR:
        m_start, m_end = outer
        return (
            Segment(Tier.RAW, "$2", m_start),
            Segment(Tier.MINUTE, m_start, "$3"),
            Segment(Tier.HOUR, "$3", "$4"),
            Segment(Tier.MINUTE, "$4", m_end),
            Segment(Tier.RAW, m_end, "$5"),
        )
    h_start, h_end, m_start, m_end = outer
    return (
        Segment(Tier.RAW, "$2", m_start),
        Segment(Tier.MINUTE, m_start, h_start),
        Segment(Tier.HOUR, h_start, "$3"),
        Segment(Tier.DAY, "$3", "$4"),
        Segment(Tier.HOUR, "$4", h_end),
        Segment(Tier.MINUTE, h_end, m_end),
        Segment(Tier.RAW, m_end, "$5"),
    )


def outer_parameters(tier: Tier, first: int) -> tuple[str, ...]:
    """Parameter names of a plan's outer bounds, numbered from ``first``."""
    count = {Tier.HOUR: 2, Tier.DAY: 4}.get(tier, 0)
    return tuple(f"${first + n}" for n in range(count))


def _width(tier: Tier) -> str:
    return f"INTERVAL '{TIERS[tier].bucket.interval}'"


def _bucket(tier: Tier, column: str) -> str:
    zone = ", $8::text" if TIERS[tier].bucket.city_calendar else ""
    return f"time_bucket({_width(tier)}, {column}{zone})"


def _raw_rows(kind: Kind, metrics: tuple[Metric, ...], parts: tuple[Segment, ...]) -> str:
    raw = readings_table(kind)
    cols = ", ".join(f"r.{m.name}" for m in metrics)
    rows = []
    for n, seg in enumerate(parts):
        if seg.tier is Tier.RAW:
            rows.append(
                f"SELECT r.device_id, r.ts, {cols} FROM {raw} AS r JOIN member_ids AS m"
                f" ON m.device_id = r.device_id WHERE r.ts >= {seg.lower} AND r.ts < {seg.upper}"
            )
        else:
            rows.append(
                f"SELECT r.device_id, r.ts, {cols} FROM dirty_{n} AS d"
                f" JOIN member_ids AS m ON m.device_id = d.device_id JOIN {raw} AS r"
                f" ON r.device_id = d.device_id AND r.ts >= d.bucket"
                f" AND r.ts < d.bucket + {_width(seg.tier)}"
                f" AND r.ts >= {seg.lower} AND r.ts < {seg.upper}"
            )
    return " UNION ALL ".join(rows)


def _raw_parts(
    kind: Kind, metrics: tuple[Metric, ...], parts: tuple[Segment, ...], calendar: bool
) -> str:
    """Per (area, device, part of width $6) aggregates of the raw rows the query needs, each
    reading aggregated once and its part then given to every area holding the device."""
    zone = ", $8::text" if calendar else ""
    lags = previous_values(kind, metrics)
    selects = part_aggregates(kind, metrics, since=True)
    names = ", ".join(m.name for m in metrics)
    return (
        "SELECT m.area, p.* FROM ("
        f"SELECT device_id, bucket, {', '.join(selects)} FROM ("
        f" SELECT device_id, ts, bucket, {names}{lags} FROM ("
        f"  SELECT s.*, time_bucket($6::text::interval, ts{zone}) AS bucket"
        f"  FROM ({_raw_rows(kind, metrics, parts)}) AS s"
        " ) AS b) AS w GROUP BY device_id, bucket"
        ") AS p JOIN members AS m ON m.device_id = p.device_id"
    )


def _device_columns(kind: Kind, metrics: tuple[Metric, ...]) -> str:
    columns = ["t.readings"]
    for m in metrics:
        columns += [f"t.{m.name}_{part}" for part in ("n", "min", "max", "sum")]
        if is_cumulative(kind, m):
            columns.append(f"t.bucket AS {m.name}_since")
            columns += [f"t.{m.name}_{part}" for part in ("first", "last", "inc")]
    return ", ".join(columns)


def _tier_parts(
    kind: Kind, metrics: tuple[Metric, ...], n: int, seg: Segment, area_tier: bool
) -> str:
    """Per (area, device, part) device tier rows of a segment that no dirty minute touches:
    all of them, or (with the area tier) those of the area buckets it cannot answer."""
    cols = _device_columns(kind, metrics)
    table = rollup_table(kind, seg.tier)
    clean = (
        f" AND NOT EXISTS (SELECT 1 FROM dirty_{n} AS d"
        " WHERE d.device_id = t.device_id AND d.bucket = t.bucket)"
    )
    bounds = f"t.bucket >= {seg.lower} AND t.bucket < {seg.upper}"
    if area_tier:
        return (
            f"SELECT m.area, t.device_id, t.bucket, {cols} FROM dirty_areas_{n} AS da"
            " JOIN members AS m ON m.area = da.area"
            f" JOIN {table} AS t ON t.device_id = m.device_id AND t.bucket = da.bucket"
            f" WHERE {bounds}{clean}"
        )
    return (
        f"SELECT m.area, t.device_id, t.bucket, {cols} FROM {table} AS t"
        f" JOIN members AS m ON m.device_id = t.device_id WHERE {bounds}{clean}"
    )


def _device_parts_as_area(kind: Kind, metrics: tuple[Metric, ...], area_tier: bool) -> str:
    """Device parts projected onto area part columns; a register's increase gets the step from
    the device's previous reading: the previous part's in sequence when every part is read per
    device, else the previous raw reading (or, beyond raw, the previous hour part)."""
    raw = readings_table(kind)
    columns = ["area", "bucket", "readings"]
    prevs = []
    for m in metrics:
        c = m.name
        columns += [f"{c}_{part}" for part in ("n", "min", "max", "sum")]
        if not is_cumulative(kind, m):
            continue
        before_raw = (
            f"(SELECT r.{c} FROM {raw} AS r WHERE r.device_id = p.device_id"
            f" AND r.ts < {{before}} AND r.{c} IS NOT NULL ORDER BY r.ts DESC LIMIT 1)"
        )
        if area_tier:
            fallback = previous_last(kind, m, Tier.HOUR, "p", "p.bucket")
            prev = f"COALESCE({before_raw.format(before=f'p.{c}_since')}, {fallback})"
        else:
            prev = (
                f"COALESCE(lag(p.{c}_last) OVER (PARTITION BY p.area, p.device_id,"
                f" (p.{c}_first IS NULL) ORDER BY p.bucket), {before_raw.format(before='$2')})"
            )
        prevs.append(f"CASE WHEN p.{c}_first IS NOT NULL THEN {prev} END AS {c}__prev")
        columns.append(
            f"CASE WHEN {c}_first IS NOT NULL THEN COALESCE({c}_inc, 0)"
            f" + COALESCE({delta(c + '__prev', c + '_first')}, 0) END AS {c}_increase"
        )
    extra = "".join(", " + p for p in prevs)
    # OFFSET 0 keeps the subquery whole: the increase names the previous value three times,
    # and flattened each would probe for it again.
    return (
        f"SELECT {', '.join(columns)} FROM (SELECT p.*{extra} FROM device_parts AS p OFFSET 0) AS q"
    )


def _dirty_next(kind: Kind, registers: list[Metric]) -> str:
    """Each member's next register reading after each of its dirty minutes: the step into it
    changed with the late reading, so the area rows holding it are stale until the worker's
    pass, wherever it falls (the next minute, hour or day)."""
    raw = readings_table(kind)
    nonnull = " OR ".join(f"r.{m.name} IS NOT NULL" for m in registers)
    return (
        "dirty_next AS (SELECT DISTINCT d.device_id, nx.ts FROM rollup_dirty AS d"
        " JOIN member_ids AS m ON m.device_id = d.device_id CROSS JOIN LATERAL ("
        f" SELECT r.ts FROM {raw} AS r WHERE r.device_id = d.device_id"
        f" AND r.ts >= d.minute + INTERVAL '1 minute' AND ({nonnull}) ORDER BY r.ts LIMIT 1"
        f") AS nx WHERE d.kind = '{kind.value}')"
    )


def _parts(
    kind: Kind,
    metrics: tuple[Metric, ...],
    tier: Tier,
    *,
    area_tier: bool,
    calendar: bool,
    outer: tuple[str, ...],
) -> str:
    """The WITH clause ending in ``parts``: (area, bucket, readings, per metric n/min/max/sum
    and ``<m>_increase``) covering [$2, $5) exactly once."""
    check_metrics(kind, metrics)
    parts = segments(tier, outer)
    ctes = [
        f"members AS ({members(kind, '$1::text[]')})",
        "member_ids AS (SELECT DISTINCT device_id FROM members)",
    ]
    device_parts = [_raw_parts(kind, metrics, parts, calendar)]
    area_parts = []
    cols = ", ".join(f"a.{c}" for c in area_columns(kind, metrics))
    registers = [m for m in metrics if is_cumulative(kind, m)]
    if area_tier and registers:
        ctes.append(_dirty_next(kind, registers))
    for n, seg in enumerate(parts):
        if seg.tier is Tier.RAW:
            continue
        dirty = (
            f"SELECT device_id, {_bucket(seg.tier, 'minute')} AS bucket FROM rollup_dirty"
            f" WHERE kind = '{kind.value}' AND minute >= {seg.lower} AND minute < {seg.upper}"
        )
        if area_tier and registers:
            dirty += (
                f" UNION ALL SELECT device_id, {_bucket(seg.tier, 'ts')} FROM dirty_next"
                f" WHERE ts >= {seg.lower} AND ts < {seg.upper}"
            )
        ctes.append(f"dirty_{n} AS (SELECT DISTINCT device_id, bucket FROM ({dirty}) AS x)")
        if area_tier:
            ctes.append(
                f"dirty_areas_{n} AS (SELECT DISTINCT m.area, d.bucket FROM dirty_{n} AS d"
                " JOIN members AS m ON m.device_id = d.device_id)"
            )
            area_parts.append(
                f"SELECT a.area, a.bucket, {cols} FROM {area_table(kind, seg.tier)} AS a"
                f" WHERE a.area = ANY($1::text[]) AND a.bucket >= {seg.lower}"
                f" AND a.bucket < {seg.upper} AND NOT EXISTS (SELECT 1 FROM dirty_areas_{n}"
                "  AS da WHERE da.area = a.area AND da.bucket = a.bucket)"
            )
        device_parts.append(_tier_parts(kind, metrics, n, seg, area_tier))
    ctes.append(f"device_parts AS ({' UNION ALL '.join(device_parts)})")
    union = [*area_parts, _device_parts_as_area(kind, metrics, area_tier)]
    ctes.append(f"parts AS ({' UNION ALL '.join(union)})")
    return "WITH " + ", ".join(ctes)


_VALUE = {
    "avg": "sum({c}_sum)::double precision / NULLIF(sum({c}_n), 0)",
    "min": "min({c}_min)",
    "max": "max({c}_max)",
    "sum": "sum({c}_sum)",
    "count": "sum({c}_n)::bigint",
    "rate": "sum({c}_sum)::double precision * 3600 / NULLIF(sum(" + WINDOW_METRIC + "_sum), 0)",
    "increase": "sum({c}_increase)",
}


def read_area_series(
    kind: Kind,
    metrics: tuple[Metric, ...],
    fn: str,
    tier: Tier,
    *,
    area_tier: bool,
    calendar: bool,
) -> str:
    """(area, bucket_start, readings, value): ``fn`` of ``metrics[0]`` per query bucket and area
    (the other metrics are what ``fn`` needs besides, e.g. ``interval_s`` for a rate)."""
    metric = metrics[0]
    if fn == "increase" and not is_cumulative(kind, metric):
        raise ValueError(f"{metric.name} is not a cumulative register")
    if tier is Tier.DAY and not calendar:
        raise ValueError("the day tier answers calendar buckets only")
    value = _VALUE[fn].format(c=metric.name)
    if fn == "sum" and metric.integer:
        value += "::bigint"
    zone = ", $8::text" if calendar else ""
    outer = outer_parameters(tier, 9 if calendar else 8)
    return (
        f"{_parts(kind, metrics, tier, area_tier=area_tier, calendar=calendar, outer=outer)}"
        f" SELECT area, time_bucket($7::text::interval, bucket{zone}) AS bucket_start,"
        f" sum(readings)::bigint AS readings, {value} AS value FROM parts"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )


def read_area_totals(
    kind: Kind, metrics: tuple[Metric, ...], tier: Tier, *, area_tier: bool
) -> str:
    """(area, readings, per metric <m>_n, <m>_sum and a register's <m>_increase) over [$2, $5);
    parameters $1-$6, then an hour plan's minute bounds as $7, $8 (no calendar buckets here)."""
    if tier is Tier.DAY:
        raise ValueError("totals are planned on hours")
    outer = outer_parameters(tier, 7)
    selects = ["sum(readings)::bigint AS readings"]
    for m in metrics:
        c = m.name
        selects += [f"sum({c}_n)::bigint AS {c}_n", f"{sum_of(m, c + '_sum')} AS {c}_sum"]
        if is_cumulative(kind, m):
            selects.append(f"sum({c}_increase) AS {c}_increase")
    return (
        f"{_parts(kind, metrics, tier, area_tier=area_tier, calendar=False, outer=outer)}"
        f" SELECT area, {', '.join(selects)} FROM parts GROUP BY area ORDER BY area"
    )
