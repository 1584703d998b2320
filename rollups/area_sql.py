"""The SQL text of the area tiers (per district and for the city), built only from contract names.

An area row is the sum over the area's devices of their device-tier rows of the same bucket, so
it is exact whenever those are; a cumulative register's ``<m>_increase`` adds each device's
increase inside the bucket and the step into it from the device's previous reading.

Area reads take an ``areas`` array ($1): a district name or ``city`` (or several at once, for the
summaries). Membership is the registry's (``devices``) at the time of the read or recompute.
"""

from __future__ import annotations

from devices.contract import METRICS, Kind, Metric, readings_table
from rollups.schemas import (
    CITY_AREA,
    WINDOW_METRIC,
    Tier,
    area_columns,
    area_table,
    is_cumulative,
    rollup_table,
)
from rollups.sql import bucket_expr, check_metrics, delta, sum_of, tier_bucket


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


def _previous_last(kind: Kind, metric: Metric, tier: Tier, row: str, before: str) -> str:
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
        f" {_previous_last(kind, m, tier, 't', 't.bucket')} END AS {m.name}__prev"
        for m in metrics
        if is_cumulative(kind, m)
    )
    rows = (
        f"SELECT a.area, t.*{prevs} FROM ({affected_sql}) AS a"
        f" JOIN ({members(kind, None)}) AS m ON m.area = a.area"
        f" JOIN {table} AS t ON t.device_id = m.device_id AND t.bucket = a.bucket"
        + (" AND t.bucket >= $3" if bounded else "")
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
        f" {_previous_last(kind, m, tier, 't', '$1')}) END AS {m.name}__prev"
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


# --- reads ------------------------------------------------------------------------------------
# Parameters as rollups/sql.py read_series, but $1 are areas: $2 from, $3 first tier boundary,
# $4 last tier boundary, $5 to, $6 part width, $7 query bucket width, $8 time zone (calendar
# only). With an area tier, clean area buckets of [$3, $4) are read from it; an area bucket
# holding a dirty minute of a member is read from its members' device tier rows, their dirty
# buckets from raw. Without one ("device tiers": the area tier is being re-derived after a move,
# or the width is finer than an hour), the middle is read from the device tier the same way.
# The raw edges are read once for all members (a time-range scan joined to the members).


def _raw_parts(kind: Kind, metrics: tuple[Metric, ...], tiered: bool, calendar: bool) -> str:
    """Per (area, device, part) aggregates of the raw rows the query needs."""
    raw = readings_table(kind)
    zone = ", $8::text" if calendar else ""
    cols = ", ".join(f"r.{m.name}" for m in metrics)
    rows = (
        f"SELECT m.area, r.device_id, r.ts, {cols} FROM {raw} AS r JOIN members AS m"
        " ON m.device_id = r.device_id WHERE r.ts >= $2 AND r.ts < $3"
        f" UNION ALL SELECT m.area, r.device_id, r.ts, {cols} FROM {raw} AS r JOIN members AS m"
        " ON m.device_id = r.device_id WHERE r.ts >= $4 AND r.ts < $5"
    )
    if tiered:
        rows += (
            f" UNION ALL SELECT m.area, r.device_id, r.ts, {cols} FROM dirty AS d"
            f" JOIN members AS m ON m.device_id = d.device_id JOIN {raw} AS r"
            " ON r.device_id = d.device_id AND r.ts >= d.bucket"
            " AND r.ts < d.bucket + $6::text::interval AND r.ts >= $3 AND r.ts < $4"
        )
    lags = "".join(
        f", lag({m.name}) OVER (PARTITION BY area, device_id, bucket, ({m.name} IS NULL)"
        f" ORDER BY ts) AS {m.name}__lag"
        for m in metrics
        if is_cumulative(kind, m)
    )
    selects = ["count(*)::integer AS readings"]
    for m in metrics:
        c = m.name
        selects += [
            f"count({c})::integer AS {c}_n",
            f"min({c}) AS {c}_min",
            f"max({c}) AS {c}_max",
            f"{sum_of(m, c)} AS {c}_sum",
        ]
        if is_cumulative(kind, m):
            selects += [
                f"min(ts) FILTER (WHERE {c} IS NOT NULL) AS {c}_since",
                f"(array_agg({c} ORDER BY ts) FILTER (WHERE {c} IS NOT NULL))[1] AS {c}_first",
                f"(array_agg({c} ORDER BY ts DESC) FILTER (WHERE {c} IS NOT NULL))[1] AS {c}_last",
                f"CASE WHEN count({c}) > 0 THEN COALESCE(sum({delta(c + '__lag', c)}), 0) END"
                f" AS {c}_inc",
            ]
    names = ", ".join(m.name for m in metrics)
    return (
        f"SELECT area, device_id, bucket, {', '.join(selects)} FROM ("
        f" SELECT area, device_id, ts, bucket, {names}{lags} FROM ("
        f"  SELECT s.*, time_bucket($6::text::interval, ts{zone}) AS bucket FROM ({rows}) AS s"
        " ) AS b) AS w GROUP BY area, device_id, bucket"
    )


def _device_columns(kind: Kind, metrics: tuple[Metric, ...], prefix: str) -> str:
    columns = ["readings"]
    for m in metrics:
        columns += [f"{m.name}_{part}" for part in ("n", "min", "max", "sum")]
        if is_cumulative(kind, m):
            columns += [f"{m.name}_{part}" for part in ("since", "first", "last", "inc")]
    return ", ".join(
        f"{prefix}bucket AS {c}" if c.endswith("_since") else prefix + c for c in columns
    )


def _tier_parts(kind: Kind, metrics: tuple[Metric, ...], table: str, area_tier: bool) -> str:
    """Per (area, device, part) device tier rows of the middle that no dirty minute touches:
    all of them, or (with an area tier) those in the area buckets the area tier cannot answer."""
    cols = _device_columns(kind, metrics, "t.")
    clean = (
        " AND NOT EXISTS (SELECT 1 FROM dirty AS d"
        " WHERE d.device_id = t.device_id AND d.bucket = t.bucket)"
    )
    if area_tier:
        return (
            f"SELECT m.area, t.device_id, t.bucket, {cols} FROM dirty_areas AS da"
            " JOIN members AS m ON m.area = da.area"
            f" JOIN {table} AS t ON t.device_id = m.device_id AND t.bucket = da.bucket"
            f" WHERE t.bucket >= $3 AND t.bucket < $4{clean}"
        )
    return (
        f"SELECT m.area, t.device_id, t.bucket, {cols} FROM {table} AS t"
        f" JOIN members AS m ON m.device_id = t.device_id"
        f" WHERE t.bucket >= $3 AND t.bucket < $4{clean}"
    )


def _device_parts_as_area(
    kind: Kind, metrics: tuple[Metric, ...], tier: Tier | None, area_tier: bool
) -> str:
    """Device parts projected onto area part columns; a register's increase gets the step from
    the device's previous reading: the previous part's in sequence when the whole middle is read
    per device, else the previous raw reading (or, beyond raw, the previous tier part)."""
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
            fallback = (
                _previous_last(kind, m, tier, "p", "p.bucket") if tier is not None else "NULL"
            )
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
    return f"SELECT {', '.join(columns)} FROM (SELECT p.*{extra} FROM device_parts AS p) AS q"


def _parts(
    kind: Kind, metrics: tuple[Metric, ...], tier: Tier, area_tier: bool, calendar: bool
) -> str:
    """The WITH clause ending in ``parts``: (area, bucket, readings, per metric n/min/max/sum
    and ``<m>_increase``) covering [$2, $5) exactly once."""
    check_metrics(kind, metrics)
    zone = ", $8::text" if calendar else ""
    tiered = tier is not Tier.RAW
    ctes = [f"members AS ({members(kind, '$1::text[]')})"]
    if tiered:
        ctes.append(
            "dirty AS (SELECT DISTINCT device_id,"
            f" time_bucket($6::text::interval, minute{zone}) AS bucket FROM rollup_dirty"
            f" WHERE kind = '{kind.value}' AND minute >= $3 AND minute < $4)"
        )
    if area_tier:
        ctes.append(
            "dirty_areas AS (SELECT DISTINCT m.area, d.bucket FROM dirty AS d"
            " JOIN members AS m ON m.device_id = d.device_id)"
        )
    device_parts = _raw_parts(kind, metrics, tiered, calendar)
    if tiered:
        device_parts += " UNION ALL " + _tier_parts(
            kind, metrics, rollup_table(kind, tier), area_tier
        )
    ctes.append(f"device_parts AS ({device_parts})")
    parts = _device_parts_as_area(kind, metrics, tier if tiered else None, area_tier)
    if area_tier:
        cols = ", ".join(f"a.{c}" for c in area_columns(kind, metrics))
        parts = (
            f"SELECT a.area, a.bucket, {cols} FROM {area_table(kind, tier)} AS a"
            " WHERE a.area = ANY($1::text[]) AND a.bucket >= $3 AND a.bucket < $4"
            " AND NOT EXISTS (SELECT 1 FROM dirty_areas AS da"
            "  WHERE da.area = a.area AND da.bucket = a.bucket)"
            f" UNION ALL {parts}"
        )
    ctes.append(f"parts AS ({parts})")
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
    value = _VALUE[fn].format(c=metric.name)
    if fn == "sum" and metric.integer:
        value += "::bigint"
    zone = ", $8::text" if calendar else ""
    return (
        f"{_parts(kind, metrics, tier, area_tier, calendar)}"
        f" SELECT area, time_bucket($7::text::interval, bucket{zone}) AS bucket_start,"
        f" sum(readings)::bigint AS readings, {value} AS value FROM parts"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )


def read_area_totals(
    kind: Kind, metrics: tuple[Metric, ...], tier: Tier, *, area_tier: bool
) -> str:
    """(area, readings, per metric <m>_n, <m>_sum and a register's <m>_increase) over [$2, $5);
    parameters $1-$6 only (parts are never calendar buckets here)."""
    selects = ["sum(readings)::bigint AS readings"]
    for m in metrics:
        c = m.name
        selects += [f"sum({c}_n)::bigint AS {c}_n", f"{sum_of(m, c + '_sum')} AS {c}_sum"]
        if is_cumulative(kind, m):
            selects.append(f"sum({c}_increase) AS {c}_increase")
    return (
        f"{_parts(kind, metrics, tier, area_tier, False)}"
        f" SELECT area, {', '.join(selects)} FROM parts"
        " GROUP BY area ORDER BY area"
    )


def sum_of_device_means(kind: Kind, metric: Metric) -> str:
    """(area, total): per area $1, each member's mean of ``metric`` over [$2, $3), summed;
    members without a value there add nothing. Raw only: the window is minutes long."""
    check_metrics(kind, (metric,))
    c = metric.name
    return (
        f"WITH members AS ({members(kind, '$1::text[]')})"
        f" SELECT m.area, sum(d.mean) AS total FROM (SELECT device_id, avg({c}) AS mean"
        f" FROM {readings_table(kind)} WHERE ts >= $2 AND ts < $3 AND {c} IS NOT NULL"
        " GROUP BY device_id) AS d JOIN members AS m ON m.device_id = d.device_id"
        " GROUP BY m.area"
    )
