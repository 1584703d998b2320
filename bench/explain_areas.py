"""``python -m bench.explain_areas``: where a wide query's time goes, per device tiers (before)
and area tiers (after), on a modest fleet generated inside a private TimescaleDB.

The fleet (``--devices``, a third of each kind over the four districts) gets device day parts
for a year, hour parts for the last 8 days and raw readings at one a minute for the last
``--raw-hours``, all by ``generate_series``; the area tiers are derived from the device tiers
(``rollups.service.backfill_areas``), and the newest minutes are marked dirty as ingest leaves
them. Then, with ``auto_explain`` logging every statement's plan with its buffers, it runs:
- a district's year at 1-day buckets, through the device tiers (the old planner: one tier row
  per device and day, raw edges per device) and through the area tier;
- the city summary, as the code before the area tiers ran it (the main checkout's
  ``api.summary``, in its own process) and as it runs now.
It prints, per case, statements, their summed execution time and shared buffers, and the
slowest statement's plan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from api import summary
from core.config import Settings
from core.db import Connection, create_pool
from devices.contract import District, Kind
from migrations.runner import migrate
from rollups import repository, service
from rollups.buckets import DAY, parse_bucket
from rollups.schemas import Tier, rollup_table, tier_columns
from stack.services import PostgresCluster, free_port, remove_tree

_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+plan:")
_BUFFERS = re.compile(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?")


def _value(column: str, readings: str) -> str:
    """A plausible aggregate for a generated tier row (the plans, not the values, matter)."""
    if column == "readings" or column.endswith("_n"):
        return readings
    if column.endswith(("_first", "_last")):
        return "1000 + extract(epoch FROM g) / 3600"
    if column.endswith("_inc"):
        return "random() * 5"
    part = column.rpartition("_")[2]
    scale = {"min": "1", "max": "50", "sum": f"25 * {readings}"}[part]
    return f"(random() * {scale})"


def _tier_insert(kind: Kind, tier: Tier, start: datetime, end: datetime) -> str:
    step, readings = {Tier.HOUR: ("1 hour", "60"), Tier.DAY: ("1 day", "1440")}[tier]
    columns = tier_columns(kind)
    origin = "'Asia/Almaty'" if tier is Tier.DAY else None
    series = (
        f"generate_series(time_bucket('{step}', '{start.isoformat()}'::timestamptz"
        f"{', ' + origin if origin else ''}), '{end.isoformat()}'::timestamptz - interval"
        f" '{step}', interval '{step}')"
    )
    values = ", ".join(f"{_value(c, readings)}" for c in columns)
    return (
        f"INSERT INTO {rollup_table(kind, tier)} (device_id, bucket, {', '.join(columns)})"
        f" SELECT d.device_id, g, {values} FROM devices AS d CROSS JOIN {series} AS g"
        f" WHERE d.kind = '{kind.value}'"
    )


_RAW = {
    Kind.TRAFFIC: (
        "vehicle_count, interval_s, avg_speed_kmh, occupancy_pct, heavy_vehicle_count",
        "(random() * 30)::int, 60, 20 + random() * 60, random() * 100, (random() * 5)::int",
    ),
    Kind.ENERGY: (
        "energy_kwh, power_kw, voltage_v, current_a, power_factor",
        "1000 + extract(epoch FROM g) / 3600, random() * 20, 230, random() * 80, 0.95",
    ),
    Kind.AIR: (
        "pm2_5, pm10, no2, so2, o3, co, temperature_c, humidity_pct, pressure_hpa",
        "random() * 80, random() * 150, random() * 90, random() * 40, random() * 120,"
        " random() * 3000, random() * 30, random() * 100, 950 + random() * 50",
    ),
}


async def load(pool: asyncpg.Pool, count: int, now: datetime, raw_hours: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    kinds, districts = list(Kind), list(District)
    await pool.executemany(
        "INSERT INTO devices (device_id, kind, district) VALUES ($1, $2, $3)",
        [
            (f"x-{kinds[n % 3].value}-{n}", kinds[n % 3].value, districts[(n // 3) % 4].value)
            for n in range(count)
        ],
    )
    year, week = DAY.floor(now - timedelta(days=365)), now - timedelta(days=8)
    for kind in Kind:
        await pool.execute(_tier_insert(kind, Tier.DAY, year, DAY.floor(now)))
        await pool.execute(_tier_insert(kind, Tier.HOUR, week, now))
    timings["device tiers"] = time.perf_counter() - clock
    clock = time.perf_counter()
    raw_from = now - timedelta(hours=raw_hours)
    for kind in Kind:
        names, values = _RAW[kind]
        await pool.execute(
            f"INSERT INTO {kind.value}_readings (device_id, ts, {names})"
            f" SELECT d.device_id, g, {values} FROM devices AS d CROSS JOIN generate_series("
            "$1::timestamptz, $2::timestamptz, interval '1 minute') AS g"
            f" WHERE d.kind = '{kind.value}'",
            raw_from,
            now,
        )
        # What ingest leaves behind at a steady rate: the newest two minutes of every device.
        await pool.execute(
            "INSERT INTO rollup_dirty (kind, device_id, minute) SELECT $1, device_id, m"
            " FROM devices CROSS JOIN generate_series(time_bucket('1 minute', $2::timestamptz)"
            " - interval '1 minute', time_bucket('1 minute', $2::timestamptz), interval"
            " '1 minute') AS m WHERE kind = $1",
            kind.value,
            now,
        )
    timings["raw"] = time.perf_counter() - clock
    clock = time.perf_counter()
    await service.backfill_areas(pool, year, now)
    timings["backfill_areas"] = time.perf_counter() - clock
    await pool.execute("VACUUM ANALYZE", timeout=600)
    return timings


async def explain(conn: Connection, text: str, *args: Any) -> tuple[float, int, str]:
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {text}", *args)
    plan = "\n".join(row[0] for row in rows)
    ms = float(re.search(r"Execution Time: ([0-9.]+) ms", plan).group(1))  # type: ignore[union-attr]
    hit = _BUFFERS.search(plan)
    buffers = sum(int(x or 0) for x in hit.groups()) if hit else 0
    return ms, buffers, plan


async def district_year(pool: asyncpg.Pool, now: datetime) -> dict[str, tuple[float, int, str]]:
    width = parse_bucket("1d")
    start, end = now - timedelta(days=365), now
    plan = service.plan(width, start, end)
    args = [start, plan.tier_start, plan.tier_end, end, plan.part_width, plan.query_width]
    args.append(plan.timezone)
    out = {}
    async with pool.acquire() as conn:
        ids = [
            r["device_id"]
            for r in await conn.fetch(
                "SELECT device_id FROM devices WHERE kind = 'air' AND district = 'gate'"
            )
        ]
        before = repository._series_sql(Kind.AIR, ("pm2_5",), "avg", Tier.DAY, True)
        after = repository._area_series_sql(
            Kind.AIR, ("pm2_5",), "avg", Tier.DAY, area_tier=True, calendar=True
        )
        for _ in range(2):  # the second run is the warm one reported
            out["before"] = await explain(conn, before, ids, *args)
            out["after"] = await explain(conn, after, ["gate"], *args, *plan.outer)
    return out


def _logged(log: Path, offset: int) -> tuple[int, float, int, str]:
    """Statements auto_explain logged after ``offset``: count, summed ms, buffers, slowest."""
    text = log.read_text(errors="replace")[offset:]
    blocks = re.split(r"(?=^\S.*LOG:\s+duration: )", text, flags=re.M)
    count, total, buffers, slowest, worst = 0, 0.0, 0, "", -1.0
    for block in blocks:
        found = _DURATION.search(block)
        if not found:
            continue
        ms = float(found.group(1))
        count, total = count + 1, total + ms
        hit = _BUFFERS.search(block)
        buffers += sum(int(x or 0) for x in hit.groups()) if hit else 0
        if ms > worst:
            worst, slowest = ms, block
    return count, total, buffers, slowest


_OLD_SUMMARY = """
import asyncio, sys, time
from datetime import datetime
from core.config import Settings
from core.db import create_pool
from api import summary
async def main():
    pool = await create_pool(Settings(database_url=sys.argv[1]), "explain-before")
    at = datetime.fromisoformat(sys.argv[2])
    await summary.city_summary(pool, at)
    started = time.perf_counter()
    await summary.city_summary(pool, at)
    print(time.perf_counter() - started)
    await pool.close()
asyncio.run(main())
"""


async def city_summaries(
    cluster: PostgresCluster, pool: asyncpg.Pool, now: datetime, main_checkout: Path
) -> dict[str, tuple[float, int, float, int, str]]:
    log = cluster.data_dir / "postgres.log"
    async with pool.acquire() as conn:
        await conn.execute("LOAD 'auto_explain'")  # defines its settings in this session
        for setting in (
            "session_preload_libraries = 'auto_explain'",
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_buffers = on",
        ):
            await conn.execute(f"ALTER SYSTEM SET {setting}")
        await conn.execute("SELECT pg_reload_conf()")
    await pool.expire_connections()
    out = {}
    offset = log.stat().st_size
    result = await asyncio.to_thread(
        subprocess.run,
        [str(main_checkout / ".venv/bin/python"), "-c", _OLD_SUMMARY, cluster.url, now.isoformat()],
        cwd=main_checkout,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(main_checkout)},
    )
    wall = float(result.stdout.strip().splitlines()[-1])
    count, total, buffers, slowest = _logged(log, offset)
    out["before"] = (wall, count // 2, total / 2, buffers // 2, slowest)
    await summary.city_summary(pool, now, Settings().rollups.expected_interval_s)
    offset = log.stat().st_size
    started = time.perf_counter()
    await summary.city_summary(pool, now, Settings().rollups.expected_interval_s)
    wall = time.perf_counter() - started
    count, total, buffers, slowest = _logged(log, offset)
    out["after"] = (wall, count, total, buffers, slowest)
    await pool.execute("ALTER SYSTEM RESET session_preload_libraries")
    await pool.execute("ALTER SYSTEM RESET auto_explain.log_min_duration")
    await pool.execute("SELECT pg_reload_conf()")
    return out


async def run(args: argparse.Namespace, cluster: PostgresCluster) -> None:
    try:
        migrate(cluster.url)
        settings = Settings(database_url=cluster.url)
        settings.database.command_timeout_s = 600  # bulk statements of the load
        pool = await create_pool(settings, "explain")
        now = datetime.now(UTC).replace(microsecond=0)
        timings = await load(pool, args.devices, now, args.raw_hours)
        print(
            f"fleet {args.devices} devices; load: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        )
        for case, (ms, buffers, plan) in (await district_year(pool, now)).items():
            print(
                f"\n## district 1 y at 1 d, {case}: {ms:.1f} ms, {buffers} shared buffers\n{plan}"
            )
        for case, (wall, count, total, buffers, slowest) in (
            await city_summaries(cluster, pool, now, args.main_checkout)
        ).items():
            print(
                f"\n## city summary, {case}: {wall * 1000:.0f} ms wall, {count} statements,"
                f" {total:.1f} ms executing, {buffers} shared buffers; slowest:\n{slowest}"
            )
        await pool.close()
    finally:
        cluster.stop(mode="immediate")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.explain_areas", description=__doc__)
    parser.add_argument("--devices", type=int, default=600)
    parser.add_argument("--raw-hours", type=int, default=26)
    parser.add_argument("--main-checkout", type=Path, default=Path("/work/main"))
    folder = Path(tempfile.mkdtemp(prefix="alatau-explain-"))
    folder.chmod(0o755)  # the server runs as its own user
    cluster = PostgresCluster(folder / "postgres", free_port())
    cluster.start()
    try:
        asyncio.run(run(parser.parse_args(), cluster))
    finally:
        remove_tree(folder)


if __name__ == "__main__":
    main()
