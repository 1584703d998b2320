"""All of the rollup worker's and the tiered reads' database calls (SQL text in rollups/sql.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Final

import asyncpg

from core.db import Connection
from devices.contract import METRICS_BY_NAME, Kind, readings_table
from rollups import area_reads, area_sql, sql
from rollups.schemas import (
    AREA_TIERS,
    ROLLED_TIERS,
    TIERS,
    Plan,
    Tier,
    area_table,
    rollup_table,
)

# Two-key advisory locks: this constant ("roll") and the kind's position. One worker per kind at
# a time recomputes, so two never write the same hour from different views of its minutes.
_LOCK_KEY: Final = 0x726F6C6C
_KIND_LOCK: Final = {kind: index for index, kind in enumerate(Kind)}
_RETENTION_LOCK: Final = 99
# Every bucket holding a minute starts less than a day before it and ends within a day after.
_MARGIN: Final = timedelta(days=1)
# A bulk statement (a week of a large fleet's area rows) may outlast the pool's command timeout.
_BULK_TIMEOUT_S: Final = 1800.0


@cache
def _series_sql(kind: Kind, metrics: tuple[str, ...], fn: str, tier: Tier, calendar: bool) -> str:
    definitions = tuple(METRICS_BY_NAME[kind][name] for name in metrics)
    table = None if tier is Tier.RAW else rollup_table(kind, tier)
    return sql.read_series(kind, definitions, fn, table, calendar)


async def try_lock_kind(conn: Connection, kind: Kind) -> bool:
    """Take the kind's recompute lock for the current transaction, if no one else holds it."""
    locked: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, $2)", _LOCK_KEY, _KIND_LOCK[kind]
    )
    return locked


async def claim_dirty(conn: Connection, kind: Kind, limit: int) -> list[asyncpg.Record]:
    """Delete and return up to ``limit`` dirty minutes of a kind, in the caller's transaction."""
    return await conn.fetch(sql.claim_dirty(), kind.value, limit)


async def recompute(
    conn: Connection, kind: Kind, device_ids: Sequence[str], minutes: Sequence[datetime]
) -> None:
    """Recompute the 1-minute, hour and Almaty-day buckets holding the given (device, minute)s."""
    lower, upper = min(minutes) - _MARGIN, max(minutes) + 2 * _MARGIN
    await conn.execute(sql.recompute_minutes(kind), device_ids, minutes, lower, upper)
    for tier in ROLLED_TIERS[1:]:
        await conn.execute(sql.recompute_coarser(kind, tier), device_ids, minutes, lower, upper)
    for tier in AREA_TIERS:
        await conn.execute(area_sql.recompute_areas(kind, tier), device_ids, minutes, lower)


async def claim_moves(conn: Connection, kind: Kind, limit: int) -> list[asyncpg.Record]:
    """Delete and return up to ``limit`` queued (device, area) membership changes of a kind."""
    return await conn.fetch(area_sql.claim_moves(), kind.value, limit)


async def rederive_moved(
    conn: Connection, kind: Kind, device_ids: Sequence[str], areas: Sequence[str]
) -> None:
    """Re-derive every area bucket the moved devices have parts in, for the paired areas, and
    drop the area rows left with no member."""
    for tier in AREA_TIERS:
        await conn.execute(area_sql.rederive_moved(kind, tier), device_ids, areas)
        await conn.execute(area_sql.drop_emptied(kind, tier), device_ids, areas)


async def moves_pending(conn: Connection, kind: Kind) -> bool:
    """Whether a membership change of the kind waits: its area tiers are not to be read."""
    pending: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM rollup_area_moves WHERE kind = $1)", kind.value
    )
    return pending


async def backfill_areas(
    conn: Connection, kind: Kind, tier: Tier, start: datetime, end: datetime
) -> None:
    """Re-derive every area bucket of ``tier`` in [start, end) (aligned) from the device tier."""
    async with conn.transaction():
        await conn.execute(area_sql.clear_range(kind, tier), start, end, timeout=_BULK_TIMEOUT_S)
        await conn.execute(area_sql.backfill_areas(kind, tier), start, end, timeout=_BULK_TIMEOUT_S)


async def backfill(
    conn: Connection, kind: Kind, tier: Tier, start: datetime, end: datetime
) -> None:
    """Recompute every bucket of ``tier`` in [start, end) from the tier below (bulk loads)."""
    if tier is Tier.MINUTE:
        await conn.execute(sql.backfill_minutes(kind), start, end)
    else:
        await conn.execute(sql.backfill_coarser(kind, tier), start, end)


async def series(
    conn: Connection,
    kind: Kind,
    metrics: tuple[str, ...],
    fn: str,
    plan: Plan,
    *,
    device_ids: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """``fn(metrics[0])`` per query bucket over the devices: tier rows for clean buckets inside
    the plan's [tier_start, tier_end), raw readings for everything else."""
    args: list[object] = [list(device_ids), start, plan.tier_start, plan.tier_end, end]
    args += [plan.part_width, plan.query_width]
    calendar = plan.timezone is not None
    if calendar:
        args.append(plan.timezone)
    return await conn.fetch(_series_sql(kind, metrics, fn, plan.tier, calendar), *args)


@cache
def _area_series_sql(
    kind: Kind,
    metrics: tuple[str, ...],
    fn: str | None,
    tier: Tier,
    *,
    area_tier: bool,
    calendar: bool,
) -> str:
    definitions = tuple(METRICS_BY_NAME[kind][name] for name in metrics)
    if fn is None:
        return area_reads.read_area_totals(kind, definitions, tier, area_tier=area_tier)
    return area_reads.read_area_series(
        kind, definitions, fn, tier, area_tier=area_tier, calendar=calendar
    )


async def area_series(
    conn: Connection,
    kind: Kind,
    metrics: tuple[str, ...],
    fn: str | None,
    plan: Plan,
    *,
    area_tier: bool,
    areas: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """``fn(metrics[0])`` per area and query bucket (rows: area, bucket_start, readings, value),
    or with ``fn`` None each area's totals over [start, end) (area, readings, <m>_n, <m>_sum,
    <m>_increase): area tier rows for clean area buckets when ``area_tier``, device tier rows
    for the rest of the plan's [tier_start, tier_end) (and of the finer tiers over its ``outer``
    bounds around it), raw readings for everything else."""
    # Around an hour or day plan's middle the finer area tiers answer, over the ``outer``
    # bounds (see rollups/area_reads.py); raw is then less than a minute, labelled in minutes.
    raw_width = TIERS[Tier.MINUTE].bucket.interval if plan.outer else plan.part_width
    args: list[object] = [list(areas), start, plan.tier_start, plan.tier_end, end, raw_width]
    if fn is not None:
        args.append(plan.query_width)
        if plan.timezone is not None:
            args.append(plan.timezone)
    args += list(plan.outer)
    text = _area_series_sql(
        kind, metrics, fn, plan.tier, area_tier=area_tier, calendar=plan.timezone is not None
    )
    return await conn.fetch(text, *args)


# --- retention and editions -------------------------------------------------------------------


async def licensed_edition(conn: Connection) -> bool:
    """Whether the Timescale-licensed edition (compression, policies) is loaded."""
    license_name: str | None = await conn.fetchval(
        "SELECT current_setting('timescaledb.license', true)"
    )
    return license_name == "timescale"


async def enable_compression(
    conn: Connection, kind: Kind, tier: Tier, after: timedelta, *, areas: bool = False
) -> None:
    """Compress a tier's chunks older than ``after`` (licensed edition only); ``areas``: the
    kind's area tier of that width rather than its device tier."""
    table = area_table(kind, tier) if areas else rollup_table(kind, tier)
    segment = "area" if areas else "device_id"
    enabled = await conn.fetchval(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = $1",
        table,
    )
    if not enabled:
        await conn.execute(
            f"ALTER TABLE {table} SET (timescaledb.compress,"
            f" timescaledb.compress_segmentby = '{segment}',"
            " timescaledb.compress_orderby = 'bucket')"
        )
    await conn.execute(
        "SELECT add_compression_policy($1::regclass, $2::interval, if_not_exists => true)",
        table,
        after,
    )


async def drop_old_chunks(conn: Connection, retention: dict[Tier, timedelta | None]) -> int | None:
    """Drop whole chunks older than each tier's retention (None keeps the tier); returns how many
    chunks went, or None when another worker is already doing it."""
    dropped = 0
    async with conn.transaction():
        if not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, $2)", _LOCK_KEY, _RETENTION_LOCK
        ):
            return None
        for tier, keep in retention.items():
            if keep is None:
                continue
            for kind in Kind:
                tables = [readings_table(kind) if tier is Tier.RAW else rollup_table(kind, tier)]
                if tier in AREA_TIERS:
                    tables.append(area_table(kind, tier))
                for table in tables:
                    rows = await conn.fetch(
                        "SELECT drop_chunks($1::regclass, older_than => now() - $2::interval)",
                        table,
                        keep,
                    )
                    dropped += len(rows)
    return dropped
