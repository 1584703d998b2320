"""The SQL text of the area tiers (per district and for the city), built only from contract names.

An area row is the sum over the area's devices of their device-tier rows of the same bucket, so
it is exact whenever those are; a cumulative register's ``<m>_increase`` adds each device's
increase inside the bucket and the step into it from the device's previous reading.

Area reads take an ``areas`` array ($1): a district name or ``city`` (or several at once, for the
summaries). Membership is the registry's (``devices``) at the time of the read or recompute.
"""

from __future__ import annotations

from devices.contract import METRICS, Kind, Metric
from rollups.schemas import (
    CITY_AREA,
    Tier,
    area_columns,
    area_table,
    is_cumulative,
    rollup_table,
)
from rollups.sql import bucket_expr, delta, sum_of, tier_bucket


def members(kind: Kind, areas: str | None) -> str:
    """(device_id, area) of the kind's devices: each in its district and in the city. ``areas``
    is an SQL text[] expression restricting the areas, or None for all of them."""
    where_district = f" AND district = ANY({areas})" if areas else ""
    where_city = f" AND '{CITY_AREA}' = ANY({areas})" if areas else ""
    return (
        f"SELECT device_id, district AS area FROM devices WHERE kind = '{kind.value}'"
        f"{where_district}"
        f" UNION ALL SELECT device_id, '{CITY_AREA}' AS area FROM devices"
        f" WHERE kind = '{kind.value}'{where_city}"
    )


def previous_last(kind: Kind, metric: Metric, tier: Tier, row: str, before: str) -> str:
    """The device's last ``metric`` value in its ``tier`` parts before ``before``."""
    c = metric.name
    return (
        f"(SELECT p.{c}_last FROM {rollup_table(kind, tier)} AS p"
        f" WHERE p.device_id = {row}.device_id AND p.bucket < {before}"
        f" AND p.{c}_last IS NOT NULL ORDER BY p.bucket DESC LIMIT 1)"
    )


def _sums(kind: Kind, metrics: tuple[Metric, ...], prefix: str) -> list[str]:
    """Area aggregates of device parts ``prefix``.* that carry ``<m>__prev`` for registers."""
    selects = [f"sum({prefix}readings)::integer AS readings"]
    for m in metrics:
        c = m.name
        selects += [
            f"sum({prefix}{c}_n)::integer AS {c}_n",
            f"min({prefix}{c}_min) AS {c}_min",
            f"max({prefix}{c}_max) AS {c}_max",
            f"{sum_of(m, prefix + c + '_sum')} AS {c}_sum",
        ]
        if is_cumulative(kind, m):
            selects.append(
                f"CASE WHEN count({prefix}{c}_first) > 0 THEN sum({prefix}{c}_inc)"
                f" + COALESCE(sum({delta(prefix + c + '__prev', prefix + c + '_first')}), 0)"
                f" END AS {c}_increase"
            )
    return selects


def _upsert(kind: Kind, tier: Tier, select_sql: str) -> str:
    columns = area_columns(kind)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    return (
        f"INSERT INTO {area_table(kind, tier)} (area, bucket, {', '.join(columns)}) {select_sql}"
        f" ON CONFLICT (area, bucket) DO UPDATE SET {updates}"
    )


def _from_device_rows(kind: Kind, tier: Tier, affected_sql: str, bounded: bool) -> str:
    """Area rows for the (area, bucket) pairs of ``affected_sql`` from the device tier rows of
    the areas' current members (``bounded``: no earlier than $3, so older chunks are skipped)."""
    metrics = METRICS[kind]
    table = rollup_table(kind, tier)
    prevs = "".join(
        f", CASE WHEN t.{m.name}_first IS NOT NULL THEN"
        f" {previous_last(kind, m, tier, 't', 't.bucket')} END AS {m.name}__prev"
        for m in metrics
        if is_cumulative(kind, m)
    )
    rows = (
        f"SELECT a.area, t.*{prevs} FROM ({affected_sql}) AS a"
        f" JOIN ({members(kind, None)}) AS m ON m.area = a.area"
        f" JOIN {table} AS t ON t.device_id = m.device_id AND t.bucket = a.bucket"
        + (" AND t.bucket >= $3" if bounded else "")
        # Kept whole (OFFSET 0), so a register's previous value is probed once per row.
        + " OFFSET 0"
    )
    return (
        f"SELECT w.area, w.bucket, {', '.join(_sums(kind, metrics, 'w.'))} FROM ({rows}) AS w"
        " GROUP BY w.area, w.bucket"
    )


def recompute_areas(kind: Kind, tier: Tier) -> str:
    """Re-derive the area buckets above the claimed (device, minute) pairs ($1, $2; $3 is a
    lower bound of them) from the device tier, after the device tiers were recomputed. A register's
    late reading also changes the step into the device's next reading, so the area bucket of
    its next part is re-derived too."""
    width, tz = tier_bucket(tier)
    table = rollup_table(kind, tier)
    claimed = (
        f"SELECT DISTINCT c.device_id, {bucket_expr(width, 'c.minute', tz)} AS bucket"
        " FROM unnest($1::text[], $2::timestamptz[]) AS c(device_id, minute)"
    )
    nexts = "".join(
        f" UNION SELECT n.device_id, n.bucket FROM ({claimed}) AS k CROSS JOIN LATERAL ("
        f"SELECT t.device_id, t.bucket FROM {table} AS t WHERE t.device_id = k.device_id"
        f" AND t.bucket > k.bucket AND t.{m.name}_first IS NOT NULL ORDER BY t.bucket LIMIT 1"
        ") AS n"
        for m in METRICS[kind]
        if is_cumulative(kind, m)
    )
    affected = (
        f"SELECT DISTINCT m.area, b.bucket FROM ({claimed}{nexts}) AS b"
        f" JOIN ({members(kind, None)}) AS m ON m.device_id = b.device_id"
    )
    return _upsert(kind, tier, _from_device_rows(kind, tier, affected, bounded=True))


def claim_moves() -> str:
    """Take (and delete) up to $2 queued membership changes of kind $1."""
    return (
        "DELETE FROM rollup_area_moves WHERE id IN ("
        " SELECT id FROM rollup_area_moves WHERE kind = $1 ORDER BY id LIMIT $2"
        " FOR UPDATE SKIP LOCKED) RETURNING device_id, area"
    )


def _moved(kind: Kind, tier: Tier) -> str:
    return (
        "SELECT DISTINCT v.area, t.bucket FROM unnest($1::text[], $2::text[]) AS v(device_id, area)"
        f" JOIN {rollup_table(kind, tier)} AS t ON t.device_id = v.device_id"
    )


def rederive_moved(kind: Kind, tier: Tier) -> str:
    """Re-derive every bucket of the areas $2 that the devices $1 have parts in."""
    return _upsert(kind, tier, _from_device_rows(kind, tier, _moved(kind, tier), bounded=False))


def drop_emptied(kind: Kind, tier: Tier) -> str:
    """Delete the area rows of those buckets that no current member has parts in any more."""
    table, target = rollup_table(kind, tier), area_table(kind, tier)
    return (
        f"DELETE FROM {target} AS x USING ({_moved(kind, tier)}) AS a"
        " WHERE x.area = a.area AND x.bucket = a.bucket AND NOT EXISTS ("
        f" SELECT 1 FROM ({members(kind, None)}) AS m JOIN {table} AS t"
        " ON t.device_id = m.device_id WHERE m.area = x.area AND t.bucket = x.bucket)"
    )


def clear_range(kind: Kind, tier: Tier) -> str:
    return f"DELETE FROM {area_table(kind, tier)} WHERE bucket >= $1 AND bucket < $2"


def backfill_areas(kind: Kind, tier: Tier) -> str:
    """Every area bucket in [$1, $2) from the device tier (after ``clear_range``), set-based:
    a register's previous reading is the previous part's (window lag), probed only for a
    device's first part in the range."""
    metrics = METRICS[kind]
    table = rollup_table(kind, tier)
    prevs = "".join(
        f", CASE WHEN t.{m.name}_first IS NOT NULL THEN COALESCE(lag(t.{m.name}_last) OVER"
        f" (PARTITION BY t.device_id, (t.{m.name}_first IS NULL) ORDER BY t.bucket),"
        f" {previous_last(kind, m, tier, 't', '$1')}) END AS {m.name}__prev"
        for m in metrics
        if is_cumulative(kind, m)
    )
    rows = f"SELECT t.*{prevs} FROM {table} AS t WHERE t.bucket >= $1 AND t.bucket < $2"
    select = (
        f"SELECT m.area, w.bucket, {', '.join(_sums(kind, metrics, 'w.'))} FROM ({rows}) AS w"
        f" JOIN ({members(kind, None)}) AS m ON m.device_id = w.device_id GROUP BY m.area, w.bucket"
    )
    columns = area_columns(kind)
    return f"INSERT INTO {area_table(kind, tier)} (area, bucket, {', '.join(columns)}) {select}"
