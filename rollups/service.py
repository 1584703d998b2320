"""The rollup worker (recompute dirty buckets, apply retention) and the one query planner that
picks the cheapest tier able to answer a bucket width exactly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import structlog

from core.config import RollupSettings, Settings
from core.db import Connection, create_pool
from core.db import until_available as db_until_available
from devices.contract import Kind
from rollups import repository
from rollups.buckets import DAY, HOUR, MINUTE, Bucket
from rollups.schemas import AREA_TIERS, ROLLED_TIERS, TIERS, Plan, Tier

log = structlog.get_logger(__name__)

T = TypeVar("T")


# --- the query planner ------------------------------------------------------------------------


def choose_tier(width: Bucket) -> Tier:
    """The coarsest tier whose buckets tile the query bucket: days (Almaty) for calendar
    buckets, hours or minutes for fixed widths that are multiples of them, raw otherwise."""
    if width.city_calendar:
        return Tier.DAY
    for tier in (Tier.HOUR, Tier.MINUTE):
        if width.seconds % TIERS[tier].bucket.seconds == 0:
            return tier
    return Tier.RAW


def plan(width: Bucket, start: datetime, end: datetime) -> Plan:
    """Plan a query of ``width`` buckets over [start, end)."""
    tier = choose_tier(width)
    if tier is not Tier.RAW:
        tier_bucket = TIERS[tier].bucket
        tier_start, tier_end = tier_bucket.ceil(start), tier_bucket.floor(end)
        if tier_start < tier_end:
            outer: tuple[datetime, ...] = ()
            if tier is Tier.HOUR:
                outer = (MINUTE.ceil(start), MINUTE.floor(end))
            elif tier is Tier.DAY:
                outer = (HOUR.ceil(start), HOUR.floor(end), MINUTE.ceil(start), MINUTE.floor(end))
            return Plan(
                tier,
                tier_start,
                tier_end,
                tier_bucket.interval,
                width.interval,
                width.timezone,
                outer,
            )
    return Plan(Tier.RAW, end, end, width.interval, width.interval, width.timezone)


async def series(
    conn: Connection,
    kind: Kind,
    *,
    metrics: tuple[str, ...],
    fn: str,
    device_ids: list[str],
    the_plan: Plan,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """Rows (bucket_start, readings, value), equal to the aggregate computed from raw."""
    return await repository.series(
        conn, kind, metrics, fn, the_plan, device_ids=device_ids, start=start, end=end
    )


async def area_series(
    conn: Connection,
    kind: Kind,
    *,
    metrics: tuple[str, ...],
    fn: str | None,
    areas: list[str],
    the_plan: Plan,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """Per area (a district's name or ``city``): rows (area, bucket_start, readings, value), or
    with ``fn`` None the area's totals over [start, end); equal to the aggregate computed from
    raw over the area's devices. The area tiers answer the clean middle unless a membership
    change waits for the worker; then the device tiers do. Not for a rate: an area's rate is
    its devices' rates summed, which pre-summed rows cannot give (use ``series``)."""
    if fn == "rate":
        raise ValueError("an area's rate is the sum of its devices' rates: use series()")
    area_tier = the_plan.tier in AREA_TIERS and not await repository.moves_pending(conn, kind)
    return await repository.area_series(
        conn, kind, metrics, fn, the_plan, area_tier=area_tier, areas=areas, start=start, end=end
    )


async def area_totals(
    conn: Connection,
    kind: Kind,
    *,
    metrics: tuple[str, ...],
    areas: list[str],
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    """Each area's totals over [start, end) (area, readings, <m>_n, <m>_sum, a register's
    <m>_increase), equal to the same totals from raw: planned on hours where the window holds
    a whole one, else on minutes, so raw answers less than a minute at each end."""
    the_plan = plan(HOUR, start, end)
    if the_plan.tier is Tier.RAW:
        the_plan = plan(MINUTE, start, end)
    return await area_series(
        conn, kind, metrics=metrics, fn=None, areas=areas, the_plan=the_plan, start=start, end=end
    )


# --- the worker -------------------------------------------------------------------------------


MOVES_PER_BATCH = 50


async def roll_up_kind(pool: asyncpg.Pool, kind: Kind, batch: int) -> int:
    """Recompute one batch of a kind's dirty minutes and their hours and days, device and area
    tiers, and re-derive the areas of devices whose district changed, in one transaction;
    returns how many minutes and moves, 0 when there are none or another worker holds the kind."""
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.try_lock_kind(conn, kind):
            return 0
        claimed = await repository.claim_dirty(conn, kind, batch)
        if claimed:
            await repository.recompute(
                conn,
                kind,
                [row["device_id"] for row in claimed],
                [row["minute"] for row in claimed],
            )
        moves = await repository.claim_moves(conn, kind, MOVES_PER_BATCH)
        if moves:
            await repository.rederive_moved(
                conn, kind, [row["device_id"] for row in moves], [row["area"] for row in moves]
            )
    return len(claimed) + len(moves)


async def roll_up(pool: asyncpg.Pool, batch: int = 5000) -> int:
    """Recompute until nothing is dirty (or others hold every kind); returns minutes done."""
    total = 0
    while True:
        done = 0
        for kind in Kind:
            done += await roll_up_kind(pool, kind, batch)
        total += done
        if done == 0:
            return total


def retention(settings: RollupSettings) -> dict[Tier, timedelta | None]:
    days = {
        Tier.RAW: settings.raw_retention_days,
        Tier.MINUTE: settings.minute_retention_days,
        Tier.HOUR: settings.hour_retention_days,
        Tier.DAY: settings.day_retention_days,
    }
    return {tier: None if d is None else timedelta(days=d) for tier, d in days.items()}


async def apply_retention(pool: asyncpg.Pool, settings: RollupSettings) -> int | None:
    async with pool.acquire() as conn:
        dropped = await repository.drop_old_chunks(conn, retention(settings))
    log.info("retention applied", chunks_dropped=dropped)
    return dropped


async def prepare(pool: asyncpg.Pool, settings: RollupSettings) -> bool:
    """Detect the edition at start-up; on the licensed one, compress old tier chunks."""
    async with pool.acquire() as conn:
        licensed = await repository.licensed_edition(conn)
        if licensed:
            after = timedelta(days=settings.compress_after_days)
            for kind in Kind:
                for tier in ROLLED_TIERS:
                    await repository.enable_compression(conn, kind, tier, after)
                for tier in AREA_TIERS:
                    await repository.enable_compression(conn, kind, tier, after, areas=True)
    log.info("rollups prepared", licensed_edition=licensed)
    return licensed


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def until_available(
    operation: Callable[[], Awaitable[T]], settings: RollupSettings, stop: asyncio.Event, step: str
) -> T | None:
    """Await ``operation`` until the database lets it through (see core.db.until_available);
    None if ``stop`` is set first."""
    return await db_until_available(
        operation,
        initial_s=settings.retry_initial_s,
        max_s=settings.retry_max_s,
        stop=stop,
        step=step,
    )


async def open_pool(settings: Settings, stop: asyncio.Event) -> asyncpg.Pool | None:
    """The worker's pool once the database accepts connections; None if ``stop`` came first."""
    return await until_available(
        lambda: create_pool(settings, "rollups"), settings.rollups, stop, "connect"
    )


async def run(pool: asyncpg.Pool, settings: RollupSettings, stop: asyncio.Event) -> None:
    """The worker loop: roll up what is dirty, pause when idle, apply retention on schedule.
    While the database is away each step waits and retries; a dirty minute stays dirty until
    the transaction that recomputes it commits."""
    await until_available(lambda: prepare(pool, settings), settings, stop, "prepare")
    next_retention = 0.0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        done = await until_available(
            lambda: roll_up(pool, settings.batch_minutes), settings, stop, "roll up"
        )
        if done:
            log.debug("rolled up", minutes=done)
        if loop.time() >= next_retention and not stop.is_set():
            await until_available(
                lambda: apply_retention(pool, settings), settings, stop, "retention"
            )
            next_retention = loop.time() + settings.retention_interval_s
        await _pause(stop, settings.interval_s)


def _weeks(start: datetime, end: datetime, step_days: int) -> list[tuple[datetime, datetime]]:
    steps, cursor = [], start
    while cursor < end:
        upper = min(cursor + timedelta(days=step_days), end)
        steps.append((cursor, upper))
        cursor = upper
    return steps


async def backfill(pool: asyncpg.Pool, start: datetime, end: datetime, step_days: int = 7) -> None:
    """Recompute every tier, device and area, over [start, end) from raw, a week at a time
    (bulk loads). ``start`` and ``end`` are widened to Almaty midnights so every day bucket is
    whole."""
    start, end = DAY.floor(start), DAY.ceil(end)
    for kind in Kind:
        for tier in ROLLED_TIERS:
            for lower, upper in _weeks(start, end, step_days):
                async with pool.acquire() as conn:
                    await repository.backfill(conn, kind, tier, lower, upper)
        log.info("backfilled", kind=kind.value)
    await backfill_areas(pool, start, end, step_days)


async def backfill_areas(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    step_days: int = 7,
    tiers: tuple[Tier, ...] = AREA_TIERS,
) -> None:
    """Re-derive the area tiers (minute, hour and day, or those of ``tiers``; every district and
    the city) over [start, end) from the device tiers of the same widths, set-based, a week at a
    time: after the device tiers were loaded directly (benchmarks) or backfilled. Widened to
    Almaty midnights like ``backfill``."""
    start, end = DAY.floor(start), DAY.ceil(end)
    for kind in Kind:
        for tier in tiers:
            for lower, upper in _weeks(start, end, step_days):
                async with pool.acquire() as conn:
                    await repository.backfill_areas(conn, kind, tier, lower, upper)
        log.info("areas backfilled", kind=kind.value)
