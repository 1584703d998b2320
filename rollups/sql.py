"""The SQL text of the rollup tiers, built only from contract names (never from a request).

Two builders do the arithmetic and are shared by the worker and the query layer, so a tier and a
query agree by construction:
- ``from_readings``: readings -> per (device, bucket) parts: count, min, max, sum per metric, and
  for cumulative registers the first and last value and the reset-aware increase inside the bucket;
- ``from_parts``: finer parts -> coarser parts, adding the increase across sub-bucket boundaries.
"""

from __future__ import annotations

from devices.contract import METRICS, METRICS_BY_NAME, Kind, Metric, readings_table
from rollups.schemas import (
    TIERS,
    WINDOW_METRIC,
    Tier,
    is_cumulative,
    rollup_table,
    tier_columns,
)

# The increase from register value ``prev`` to ``cur``; a drop is a meter reset from zero.
_DELTA = (
    "CASE WHEN {prev} IS NULL THEN NULL WHEN {cur} >= {prev} THEN {cur} - {prev} ELSE {cur} END"
)


def delta(prev: str, cur: str) -> str:
    return _DELTA.format(prev=prev, cur=cur)


def _check(kind: Kind, metrics: tuple[Metric, ...]) -> None:
    for metric in metrics:
        if METRICS_BY_NAME[kind].get(metric.name) is not metric:
            raise ValueError(f"{metric.name!r} is not a {kind.value} metric")


def _sum(metric: Metric, expr: str) -> str:
    # sum(bigint) is numeric in Postgres; keep integer metrics integers.
    return f"sum({expr})::bigint" if metric.integer else f"sum({expr})"


def previous_values(kind: Kind, metrics: tuple[Metric, ...]) -> str:
    """Window columns ``<m>__prev``: each cumulative metric's previous value in its bucket."""
    return "".join(
        f", lag({m.name}) OVER (PARTITION BY device_id, bucket, ({m.name} IS NULL) ORDER BY ts)"
        f" AS {m.name}__prev"
        for m in metrics
        if is_cumulative(kind, m)
    )


def part_aggregates(kind: Kind, metrics: tuple[Metric, ...], *, since: bool = False) -> list[str]:
    """The columns of a part aggregated from readings (after ``previous_values``); ``since``
    adds when each cumulative metric's first value came."""
    selects = ["count(*)::integer AS readings"]
    for m in metrics:
        c = m.name
        selects += [
            f"count({c})::integer AS {c}_n",
            f"min({c}) AS {c}_min",
            f"max({c}) AS {c}_max",
            f"{_sum(m, c)} AS {c}_sum",
        ]
        if is_cumulative(kind, m):
            if since:
                selects.append(f"min(ts) FILTER (WHERE {c} IS NOT NULL) AS {c}_since")
            selects += [
                f"(array_agg({c} ORDER BY ts) FILTER (WHERE {c} IS NOT NULL))[1] AS {c}_first",
                f"(array_agg({c} ORDER BY ts DESC) FILTER (WHERE {c} IS NOT NULL))[1] AS {c}_last",
                f"CASE WHEN count({c}) > 0 THEN COALESCE(sum({delta(c + '__prev', c)}), 0) END"
                f" AS {c}_inc",
            ]
    return selects


def from_readings(kind: Kind, metrics: tuple[Metric, ...], rows_sql: str, bucket_sql: str) -> str:
    """Parts from readings. ``rows_sql`` yields device_id, ts and the metric columns;
    ``bucket_sql`` is an expression of ``ts``."""
    _check(kind, metrics)
    names = [m.name for m in metrics]
    lags = previous_values(kind, metrics)
    selects = part_aggregates(kind, metrics)
    return (
        f"SELECT device_id, bucket, {', '.join(selects)} FROM ("
        f" SELECT device_id, ts, bucket, {', '.join(names)}{lags} FROM ("
        f"  SELECT device_id, ts, {bucket_sql} AS bucket, {', '.join(names)} FROM ({rows_sql}) AS s"
        " ) AS b"
        ") AS w GROUP BY device_id, bucket"
    )


def from_parts(kind: Kind, metrics: tuple[Metric, ...], parts_sql: str, bucket_sql: str) -> str:
    """Coarser parts from finer ones. ``parts_sql`` yields device_id, bucket and the columns of
    ``tier_columns``; ``bucket_sql`` is an expression of ``bucket``."""
    _check(kind, metrics)
    lags = "".join(
        f", lag({m.name}_last) OVER (PARTITION BY device_id, nb, ({m.name}_first IS NULL)"
        f" ORDER BY bucket) AS {m.name}__prev"
        for m in metrics
        if is_cumulative(kind, m)
    )
    selects = ["sum(readings)::integer AS readings"]
    for m in metrics:
        c = m.name
        selects += [
            f"sum({c}_n)::integer AS {c}_n",
            f"min({c}_min) AS {c}_min",
            f"max({c}_max) AS {c}_max",
            f"{_sum(m, c + '_sum')} AS {c}_sum",
        ]
        if is_cumulative(kind, m):
            selects += [
                f"(array_agg({c}_first ORDER BY bucket) FILTER (WHERE {c}_first IS NOT NULL))[1]"
                f" AS {c}_first",
                f"(array_agg({c}_last ORDER BY bucket DESC) FILTER (WHERE {c}_last IS NOT NULL))"
                f"[1] AS {c}_last",
                f"CASE WHEN count({c}_first) > 0 THEN sum({c}_inc)"
                f" + COALESCE(sum({delta(c + '__prev', c + '_first')}), 0) END AS {c}_inc",
            ]
    columns = ", ".join(tier_columns(kind, metrics))
    return (
        f"SELECT device_id, nb AS bucket, {', '.join(selects)} FROM ("
        f" SELECT device_id, bucket, nb, {columns}{lags} FROM ("
        f"  SELECT p.*, {bucket_sql} AS nb FROM ({parts_sql}) AS p"
        " ) AS b"
        ") AS w GROUP BY device_id, nb"
    )


def _bucket(width: str, column: str, timezone: str | None) -> str:
    zone = f", '{timezone}'" if timezone else ""
    return f"time_bucket(INTERVAL '{width}', {column}{zone})"


# Shared with rollups/area_sql.py, so device and area tiers use the same arithmetic.
check_metrics = _check
sum_of = _sum
bucket_expr = _bucket


def upsert(kind: Kind, table: str, select_sql: str) -> str:
    columns = tier_columns(kind)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    return (
        f"INSERT INTO {table} (device_id, bucket, {', '.join(columns)}) {select_sql}"
        f" ON CONFLICT (device_id, bucket) DO UPDATE SET {updates}"
    )


# --- the worker -------------------------------------------------------------------------------


def claim_dirty() -> str:
    """Take (and delete) up to $2 dirty minutes of kind $1. Rows an ingest transaction still holds
    are skipped: they stay dirty until it commits, so nothing is lost."""
    return (
        "DELETE FROM rollup_dirty WHERE (kind, device_id, minute) IN ("
        " SELECT kind, device_id, minute FROM rollup_dirty WHERE kind = $1"
        " ORDER BY device_id, minute LIMIT $2 FOR UPDATE SKIP LOCKED"
        ") RETURNING device_id, minute"
    )


# The claimed (device, minute) pairs; $3 and $4 bound them (with a day's margin) as constants
# so only the chunks that can hold them are probed.
_CLAIMED = "unnest($1::text[], $2::timestamptz[]) AS c(device_id, minute)"


def recompute_minutes(kind: Kind) -> str:
    """Recompute the 1-minute parts of the claimed (device, minute) pairs ($1, $2) from raw."""
    metrics = METRICS[kind]
    names = ", ".join(f"r.{m.name}" for m in metrics)
    rows = (
        f"SELECT r.device_id, r.ts, {names} FROM {_CLAIMED}"
        f" JOIN {readings_table(kind)} AS r ON r.device_id = c.device_id"
        " AND r.ts >= c.minute AND r.ts < c.minute + INTERVAL '1 minute'"
        " AND r.ts >= $3 AND r.ts < $4"
    )
    select = from_readings(kind, metrics, rows, _bucket("1 minute", "ts", None))
    return upsert(kind, rollup_table(kind, Tier.MINUTE), select)


def _coarser(tier: Tier) -> tuple[str, str | None]:
    bucket = TIERS[tier].bucket
    return bucket.interval, bucket.timezone


def tier_bucket(tier: Tier) -> tuple[str, str | None]:
    """A rolled tier's bucket width and time zone (None: fixed width)."""
    return _coarser(tier)


def recompute_coarser(kind: Kind, tier: Tier) -> str:
    """Recompute the ``tier`` buckets holding the claimed minutes from the tier below it."""
    metrics = METRICS[kind]
    width, tz = _coarser(tier)
    source, target = rollup_table(kind, TIERS[tier].source), rollup_table(kind, tier)
    rows = (
        "SELECT t.* FROM ("
        f" SELECT DISTINCT c.device_id, {_bucket(width, 'c.minute', tz)} AS start FROM {_CLAIMED}"
        f") AS k JOIN {source} AS t ON t.device_id = k.device_id"
        f" AND t.bucket >= k.start AND t.bucket < k.start + INTERVAL '{width}'"
        " AND t.bucket >= $3 AND t.bucket < $4"
    )
    return upsert(kind, target, from_parts(kind, metrics, rows, _bucket(width, "bucket", tz)))


def backfill_minutes(kind: Kind) -> str:
    """Recompute every 1-minute part of readings in [$1, $2) (bulk loads, repairs)."""
    metrics = METRICS[kind]
    names = ", ".join(m.name for m in metrics)
    rows = f"SELECT device_id, ts, {names} FROM {readings_table(kind)} WHERE ts >= $1 AND ts < $2"
    select = from_readings(kind, metrics, rows, _bucket("1 minute", "ts", None))
    return upsert(kind, rollup_table(kind, Tier.MINUTE), select)


def backfill_coarser(kind: Kind, tier: Tier) -> str:
    """Recompute every ``tier`` bucket from the tier below's buckets in [$1, $2) (aligned)."""
    metrics = METRICS[kind]
    width, tz = _coarser(tier)
    source, target = rollup_table(kind, TIERS[tier].source), rollup_table(kind, tier)
    rows = f"SELECT * FROM {source} WHERE bucket >= $1 AND bucket < $2"
    return upsert(kind, target, from_parts(kind, metrics, rows, _bucket(width, "bucket", tz)))


# --- reads ------------------------------------------------------------------------------------
# Parameters: $1 device ids, $2 from, $3 first tier boundary, $4 last tier boundary, $5 to,
# $6 part width, $7 query bucket width, $8 time zone (calendar buckets only). Tier rows cover
# [$3, $4) except buckets holding a dirty minute; raw readings cover the rest, so the answer is
# always the raw aggregate.

_VALUE = {
    "avg": "sum({c}_sum)::double precision / NULLIF(sum({c}_n), 0)",
    "min": "min({c}_min)",
    "max": "max({c}_max)",
    "sum": "sum({c}_sum)",
    "count": "sum({c}_n)::bigint",
    "rate": "sum({c}_sum)::double precision * 3600 / NULLIF(sum(" + WINDOW_METRIC + "_sum), 0)",
}


def read_series(
    kind: Kind, metrics: tuple[Metric, ...], fn: str, table: str | None, calendar: bool
) -> str:
    """``fn`` of ``metrics[0]`` per query bucket over every device in $1 (the other metrics are
    what ``fn`` needs besides, e.g. ``interval_s`` for a rate)."""
    _check(kind, metrics)
    metric = metrics[0]
    c = metric.name
    zone = ", $8::text" if calendar else ""
    part_bucket = f"time_bucket($6::text::interval, {{}}{zone})"
    query_bucket = f"time_bucket($7::text::interval, bucket{zone})"
    names = ", ".join(m.name for m in metrics)
    raw = readings_table(kind)
    columns = ", ".join(tier_columns(kind, metrics))
    dirty = (
        f"SELECT DISTINCT device_id, {part_bucket.format('minute')} AS bucket FROM rollup_dirty"
        f" WHERE kind = '{kind.value}' AND device_id = ANY($1::text[])"
        " AND minute >= $3 AND minute < $4"
    )
    rows = (
        f"SELECT device_id, ts, {names} FROM {raw}"
        " WHERE device_id = ANY($1::text[]) AND ts >= $2 AND ts < $3"
        f" UNION ALL SELECT device_id, ts, {names} FROM {raw}"
        " WHERE device_id = ANY($1::text[]) AND ts >= $4 AND ts < $5"
        f" UNION ALL SELECT r.device_id, r.ts, {', '.join('r.' + m.name for m in metrics)}"
        f" FROM dirty AS d JOIN {raw} AS r ON r.device_id = d.device_id"
        " AND r.ts >= d.bucket AND r.ts < d.bucket + $6::text::interval"
        # Constant bounds too, so only the chunks of [$3, $4) are probed.
        " AND r.ts >= $3 AND r.ts < $4"
    )
    parts = from_readings(kind, metrics, "SELECT * FROM raw_rows", part_bucket.format("ts"))
    if table is not None:
        parts = (
            f"SELECT device_id, bucket, {columns} FROM {table} AS t"
            " WHERE t.device_id = ANY($1::text[]) AND t.bucket >= $3 AND t.bucket < $4"
            " AND NOT EXISTS (SELECT 1 FROM dirty AS d"
            "  WHERE d.device_id = t.device_id AND d.bucket = t.bucket)"
            f" UNION ALL {parts}"
        )
    head = f"WITH dirty AS ({dirty}), raw_rows AS ({rows}), parts AS ({parts})"
    if fn == "rate":
        # An area's rate is its flow: each device's own rate in the bucket, summed (a pooled
        # sum(count) / sum(interval_s) would be the mean per detector).
        value = _VALUE[fn].format(c=c)
        return (
            f"{head}, per_device AS (SELECT {query_bucket} AS bucket_start, device_id,"
            f" sum(readings) AS readings, {value} AS value FROM parts GROUP BY 1, 2)"
            " SELECT bucket_start, sum(readings)::bigint AS readings, sum(value) AS value"
            " FROM per_device GROUP BY 1 ORDER BY 1"
        )
    if fn != "increase":
        value = _VALUE[fn].format(c=c)
        if fn == "sum" and metric.integer:
            value += "::bigint"
        return (
            f"{head} SELECT {query_bucket} AS bucket_start, sum(readings)::bigint AS readings,"
            f" {value} AS value FROM parts GROUP BY 1 ORDER BY 1"
        )
    if not is_cumulative(kind, metric):
        raise ValueError(f"{c} is not a cumulative register")
    # Each part's increase: inside it, plus from the device's previous value (the reading just
    # before the range for the first part), so a bucket gets the increase up to its readings.
    prev = (
        f"SELECT d.device_id, '-infinity'::timestamptz AS bucket, NULL::double precision AS f,"
        f" p.{c} AS l, 0::double precision AS i FROM unnest($1::text[]) AS d(device_id)"
        f" CROSS JOIN LATERAL (SELECT {c} FROM {raw} AS r WHERE r.device_id = d.device_id"
        f" AND r.ts < $2 AND r.{c} IS NOT NULL ORDER BY r.ts DESC LIMIT 1) AS p"
    )
    seq = (
        f"SELECT device_id, bucket, {c}_first AS f, {c}_last AS l, {c}_inc AS i FROM parts"
        f" WHERE {c}_first IS NOT NULL UNION ALL {prev}"
    )
    previous = "lag(l) OVER (PARTITION BY device_id ORDER BY bucket)"
    increments = f"SELECT bucket, i + COALESCE({delta(previous, 'f')}, 0) AS v FROM ({seq}) AS s"
    return (
        f"{head}, increments AS ({increments}),"
        f" counted AS (SELECT {query_bucket} AS bucket_start, sum(readings)::bigint AS readings"
        " FROM parts GROUP BY 1),"
        f" summed AS (SELECT {query_bucket} AS bucket_start, sum(v) AS value FROM increments"
        " WHERE bucket > '-infinity' GROUP BY 1)"
        " SELECT c.bucket_start, c.readings, s.value FROM counted AS c"
        " LEFT JOIN summed AS s USING (bucket_start) ORDER BY 1"
    )
