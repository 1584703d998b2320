"""``python -m bench.aggregates`` (``make bench-aggregates``): aggregate, KPI and latest-reading
latency for 1,000 devices holding a year of data, and the wide questions again at 10,000 devices,
with ingest storing a live stream alongside.

Per dataset, on a private TimescaleDB and Mosquitto (free ports, temporary folder):
1. generate, inside the database (bench/aggdata.py): raw readings at one a minute for the newest
   window, their 1-minute tier as a projection of raw, hour (and for the wider fleet day) tiers
   before it; then the project's own SQL rolls the hours and days up from the finer tier
   (``rollups.repository.backfill``) and fills the area tiers (``rollups.service.backfill_areas``);
2. start the real processes: ``python -m api``, ``python -m ingest``, ``python -m rollups`` and a
   publisher (``python -m bench.livefeed``) sending ``--ingest-rate`` readings a second over MQTT,
   so the newest buckets are dirty while the clients read;
3. ``--concurrency`` clients ask each scenario's requests over HTTP (p50/p99), and the same
   questions are computed straight from raw by SQL in the same run (for a year, over the part raw
   holds), for the ratio; GET /latest is compared with the query it replaced.
Every phase is timed. Results go to bench/results/aggregates.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench import aggdata
from bench.harness import (
    ROOT,
    BenchServices,
    Process,
    ingest_env,
    median,
    percentile,
    private_services,
)
from core.config import DatabaseSettings, Settings
from core.db import create_pool
from devices.contract import METRICS_BY_NAME, District, Kind, readings_table
from rollups import service as rollups
from rollups import sql as rollup_text
from rollups.buckets import DAY, HOUR, parse_bucket
from rollups.schemas import Plan, Tier
from stack.broker_auth import login_environment
from stack.services import free_port, port_open

RESULTS = ROOT / "bench" / "results" / "aggregates.json"
TARGETS_MS = {
    "device": 50.0,
    "district 30 d, 1h": 100.0,
    "district 1 y, 1d": 150.0,
    "city": 200.0,
    "summary": 100.0,
    "latest": 50.0,
}


@dataclass
class Layout:
    """Where each tier's data comes from, newest first: raw (and its 1-minute tier) over the last
    ``raw_hours``, generated hours over ``hour_days`` days before that (rounded to Almaty
    midnight), generated days before that back to ``tier_days`` days."""

    devices: int
    raw_hours: float
    hour_days: int
    tier_days: int
    end: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(second=0, microsecond=0)
    )

    @property
    def raw_start(self) -> datetime:
        return HOUR.floor(self.end - timedelta(hours=self.raw_hours))

    @property
    def hour_start(self) -> datetime:
        return DAY.floor(self.raw_start - timedelta(days=self.hour_days))

    @property
    def tier_start(self) -> datetime:
        return DAY.floor(self.end - timedelta(days=self.tier_days))


class Phases:
    """Wall-clock seconds per phase, printed as they end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    async def run(self, name: str, work: Awaitable[Any]) -> Any:
        began = time.perf_counter()
        result = await work
        self.seconds[name] = round(time.perf_counter() - began, 1)
        print(f"  {name}: {self.seconds[name]} s", flush=True)
        return result


async def _parallel(
    pool: asyncpg.Pool, jobs: list[tuple[str, tuple[Any, ...]]], workers: int = 3
) -> int:
    """Run statements on ``workers`` connections at once; returns rows written."""
    queue = list(reversed(jobs))
    written = 0

    async def worker() -> None:
        nonlocal written
        async with pool.acquire() as conn:
            await conn.execute("SET jit = off")  # compiling these wide expressions costs more
            while queue:
                statement, args = queue.pop()
                status = await conn.execute(statement, *args)
                written += int(status.rsplit(" ", 1)[1])

    await asyncio.gather(*(worker() for _ in range(workers)))
    return written


async def load(pool: asyncpg.Pool, layout: Layout, phases: Phases) -> dict[str, int]:
    """Generate the dataset and roll its tiers up; returns rows per part."""
    rows: dict[str, int] = {}
    async with pool.acquire() as conn:
        for statement in aggdata.create_fleet(layout.devices):
            await conn.execute(statement)
    day = timedelta(days=1)
    raw_jobs = [
        (aggdata.raw_day(kind), span)
        for span in aggdata.spans(layout.raw_start, layout.end, day)
        for kind in Kind
    ]
    rows["raw"] = await phases.run("raw readings (generate_series)", _parallel(pool, raw_jobs))
    minute_jobs = [
        (aggdata.minutes_from_raw(kind), span)
        for span in aggdata.spans(layout.raw_start, layout.end, day)
        for kind in Kind
    ]
    rows["1m"] = await phases.run("1m tier (projection of raw)", _parallel(pool, minute_jobs))
    week = timedelta(days=7)
    hour_jobs = [
        (aggdata.tier_generated(kind, Tier.HOUR), span)
        for span in aggdata.spans(layout.hour_start, layout.raw_start, week)
        for kind in Kind
    ]
    rows["1h generated"] = await phases.run(
        "1h tier before raw (generated)", _parallel(pool, hour_jobs)
    )
    day_jobs = [
        (aggdata.tier_generated(kind, Tier.DAY), span)
        for span in aggdata.spans(layout.tier_start, layout.hour_start, 8 * week)
        for kind in Kind
    ]
    rows["1d generated"] = await phases.run(
        "1d tier before the hours (generated)", _parallel(pool, day_jobs)
    )

    def coarser(tier: Tier, start: datetime) -> Awaitable[int]:
        statements = [
            (rollup_text.backfill_coarser(kind, tier), span)
            for kind in Kind
            for span in aggdata.spans(start, layout.end + day, week)
        ]
        return _parallel(pool, statements)

    await phases.run(
        "1h tier over raw (project backfill from 1m)", coarser(Tier.HOUR, layout.raw_start)
    )
    await phases.run("1d tier (project backfill from 1h)", coarser(Tier.DAY, layout.hour_start))
    backfill_areas = getattr(rollups, "backfill_areas", None)
    if backfill_areas is not None:
        await phases.run(
            "area tiers (rollups.service.backfill_areas)",
            backfill_areas(pool, layout.tier_start, layout.end + day),
        )

    async def vacuum() -> None:
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE")

    await phases.run("VACUUM ANALYZE", vacuum())
    return rows


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # a TARGETS_MS key
    requests: int
    path: str  # may hold {district} and {device}
    kind: Kind | None = None
    metric: str = ""
    bucket: str = ""
    fn: str = ""
    span: timedelta = timedelta(0)
    wide: bool = False  # also measured on the 10,000-device fleet

    @property
    def area(self) -> str:
        if "{device}" in self.path:
            return "device"
        return "district" if "{district}" in self.path else "city"


DAY_SPAN, YEAR = timedelta(days=1), timedelta(days=365)
DEVICE = "/api/v1/devices/{device}/aggregates"
DISTRICT, CITY = "/api/v1/districts/{district}/aggregates", "/api/v1/city/aggregates"

SCENARIOS = [
    Scenario("device 24 h, 1m", "device", 200, DEVICE, Kind.AIR, "pm2_5", "1m", "avg", DAY_SPAN),
    Scenario(
        "device 24 h, 15m",
        "device",
        200,
        DEVICE,
        Kind.TRAFFIC,
        "vehicle_count",
        "15m",
        "sum",
        DAY_SPAN,
    ),
    Scenario(
        "device 6 h, 30s (raw)",
        "device",
        100,
        DEVICE,
        Kind.AIR,
        "no2",
        "30s",
        "avg",
        timedelta(hours=6),
    ),
    Scenario(
        "device 30 d, 1h",
        "device",
        200,
        DEVICE,
        Kind.TRAFFIC,
        "vehicle_count",
        "1h",
        "sum",
        30 * DAY_SPAN,
    ),
    Scenario("device 1 y, 1d", "device", 200, DEVICE, Kind.AIR, "pm10", "1d", "avg", YEAR),
    Scenario(
        "device 1 y, 1mo energy increase",
        "device",
        200,
        DEVICE,
        Kind.ENERGY,
        "energy_kwh",
        "1mo",
        "increase",
        YEAR,
    ),
    Scenario(
        "district 30 d, 1h",
        "district 30 d, 1h",
        200,
        DISTRICT,
        Kind.TRAFFIC,
        "avg_speed_kmh",
        "1h",
        "avg",
        30 * DAY_SPAN,
        wide=True,
    ),
    Scenario(
        "district 1 y, 1d",
        "district 1 y, 1d",
        200,
        DISTRICT,
        Kind.ENERGY,
        "power_kw",
        "1d",
        "avg",
        YEAR,
        wide=True,
    ),
    Scenario(
        "city 1 y, 1mo",
        "city",
        100,
        CITY,
        Kind.TRAFFIC,
        "vehicle_count",
        "1mo",
        "rate",
        YEAR,
        wide=True,
    ),
    Scenario(
        "city 30 d, 1h",
        "city",
        100,
        CITY,
        Kind.AIR,
        "pm2_5",
        "1h",
        "avg",
        30 * DAY_SPAN,
        wide=True,
    ),
    Scenario("district summary", "summary", 100, "/api/v1/districts/{district}/summary", wide=True),
    Scenario("city summary", "summary", 60, "/api/v1/city/summary", wide=True),
    Scenario(
        "latest, every traffic device", "latest", 100, "/api/v1/latest", Kind.TRAFFIC, wide=True
    ),
]


def request_for(
    scenario: Scenario, fleet: list[aggdata.Device], rng: random.Random, now: datetime
) -> tuple[str, dict[str, str], tuple[list[str], datetime, datetime]]:
    """A request (path, params) and what it covers: its devices and window."""
    district = rng.choice(list(District))
    kind = scenario.kind
    if scenario.target == "latest":
        assert kind is not None
        return scenario.path, {"kind": kind.value}, ([], now, now)
    if scenario.target == "summary":
        return scenario.path.format(district=district.value), {}, ([], now, now)
    assert kind is not None
    # Unaligned ends, reaching into the newest (dirty, live) minutes.
    end = now - timedelta(seconds=rng.randrange(0, 120))
    start = end - scenario.span
    params = {
        "metric": scenario.metric,
        "bucket": scenario.bucket,
        "fn": scenario.fn,
        "from": start.isoformat(),
        "to": end.isoformat(),
    }
    if scenario.area == "device":
        device = rng.choice(aggdata.fleet_ids(fleet, kind, None))
        return scenario.path.format(device=device), params, ([device], start, end)
    scope = district if scenario.area == "district" else None
    path = scenario.path.format(district=district.value)
    return path, params, (aggdata.fleet_ids(fleet, kind, scope), start, end)


async def measure_api(
    base_url: str,
    headers: dict[str, str],
    scenario: Scenario,
    fleet: list[aggdata.Device],
    concurrency: int,
    requests: int,
    budget_s: float,
) -> dict[str, Any]:
    """``requests`` requests from ``concurrency`` clients, or fewer (at least one per client)
    when ``budget_s`` runs out first: a busy machine bounds the time, not the count."""
    rng = random.Random(scenario.name)
    now = datetime.now(UTC)
    jobs = [request_for(scenario, fleet, rng, now)[:2] for _ in range(requests)]
    latencies: list[float] = []
    sizes: list[int] = []
    deadline = time.monotonic() + budget_s

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=300, headers=headers) as http:
            while jobs and (time.monotonic() < deadline or len(latencies) < concurrency):
                path, params = jobs.pop()
                began = time.perf_counter()
                response = await http.get(path, params=params)
                latencies.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{scenario.name}: {response.status_code} {response.text[:300]}"
                    )
                body = response.json()
                sizes.append(len(body.get("items", [])) if isinstance(body, dict) else 0)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "p50_ms": round(median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "items_median": median([float(s) for s in sizes]),
    }


# The query GET /latest ran before the maintained table: one probe per device into raw.
_LATEST_FROM_RAW = (
    "SELECT d.device_id, d.district, r.* FROM devices AS d CROSS JOIN LATERAL ("
    " SELECT * FROM traffic_readings AS t WHERE t.device_id = d.device_id"
    " ORDER BY t.ts DESC LIMIT 1) AS r WHERE d.kind = 'traffic' ORDER BY d.device_id"
)
_LATEST_FROM_TABLE = (
    "SELECT d.device_id, d.district, l.* FROM devices AS d JOIN traffic_latest AS l"
    " ON l.device_id = d.device_id WHERE d.kind = 'traffic' ORDER BY d.device_id"
)


async def _timed(work: Callable[[], Awaitable[Any]], repeats: int) -> list[float]:
    latencies = []
    for _ in range(repeats):
        began = time.perf_counter()
        await work()
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


async def measure_raw(
    pool: asyncpg.Pool,
    scenario: Scenario,
    fleet: list[aggdata.Device],
    layout: Layout,
    repeats: int,
) -> dict[str, Any] | None:
    """The same question answered straight from raw (the project's series SQL with the raw plan),
    over the part of the window raw holds; None where there is no single raw query to compare."""
    rng = random.Random(scenario.name)
    if scenario.target == "latest":
        async with pool.acquire() as conn:
            before = await _timed(lambda: conn.fetch(_LATEST_FROM_RAW), repeats)
            after = await _timed(lambda: conn.fetch(_LATEST_FROM_TABLE), repeats)
        return {
            "what": "SQL only: the replaced lateral probe into raw vs the maintained table",
            "raw_p50_ms": round(median(before), 1),
            "raw_p99_ms": round(percentile(before, 99), 1),
            "table_p50_ms": round(median(after), 1),
        }
    if scenario.kind is None:
        return None
    kind = scenario.kind
    width = parse_bucket(scenario.bucket)
    metrics = (scenario.metric, "interval_s") if scenario.fn == "rate" else (scenario.metric,)
    latencies, clipped = [], False
    for _ in range(repeats):
        _, _, (devices, start, end) = request_for(scenario, fleet, rng, datetime.now(UTC))
        if start < layout.raw_start:
            start, clipped = layout.raw_start, True
        plan = Plan(Tier.RAW, end, end, width.interval, width.interval, width.timezone)
        assert all(m in METRICS_BY_NAME[kind] for m in metrics)
        async with pool.acquire() as conn:
            began = time.perf_counter()
            await rollups.series(
                conn,
                kind,
                metrics=metrics,
                fn=scenario.fn,
                device_ids=devices,
                the_plan=plan,
                start=start,
                end=end,
            )
            latencies.append((time.perf_counter() - began) * 1000)
    return {
        "what": f"raw over the last {layout.raw_hours:g} h" if clipped else "raw, same window",
        "raw_p50_ms": round(median(latencies), 1),
        "raw_p99_ms": round(percentile(latencies, 99), 1),
    }


# --- the live stack -----------------------------------------------------------------------------


class LiveStack:
    """api, ingest, the rollup worker and the publisher, as separate processes."""

    def __init__(
        self, services: BenchServices, devices: int, rate: float, pool_size: int, live: bool
    ) -> None:
        settings = services.settings()
        self.port = free_port()
        common = {
            "DATABASE_URL": services.postgres.url,
            "MQTT_URL": services.broker.url,
            **login_environment(settings),
            "ALATAU_LOG_LEVEL": "WARNING",
        }
        self.api = Process(
            "api",
            env={
                **common,
                "ALATAU_API__PORT": str(self.port),
                "ALATAU_DATABASE__POOL_MAX_SIZE": str(pool_size),
                # With its live feed on, the api also consumes the whole stream (see
                # docs/benchmarks.md); a replica serving REST reads can run without it.
                "ALATAU_LIVE__ENABLED": str(live).lower(),
            },
        )
        self.ingest = Process("ingest", env=ingest_env(settings, f"aggbench-{free_port()}"))
        self.worker = Process("rollups", env=common)
        deadline = time.monotonic() + 60
        while not port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # ingest subscribes before the first reading is sent
        self.feed = Process(
            "bench.livefeed", "--devices", str(devices), "--rate", str(rate), env=common
        )

    def stop(self) -> dict[str, Any]:
        self.feed.stop()
        fed = json.loads(self.feed.output(timeout_s=30) or "{}")
        for process in (self.ingest, self.worker, self.api):
            process.stop()
        return {
            "published": fed.get("published"),
            "api_peak_rss_mib": round(self.api.peak_rss_mib, 1),
            "ingest_peak_rss_mib": round(self.ingest.peak_rss_mib, 1),
        }


async def stored_since(pool: asyncpg.Pool, since: datetime) -> int:
    total = 0
    for kind in Kind:
        total += await pool.fetchval(
            f"SELECT count(*) FROM {readings_table(kind)} WHERE ts >= $1", since
        )
    return int(total)


async def measure_dataset(
    services: BenchServices,
    layout: Layout,
    args: argparse.Namespace,
    wide_only: bool,
    headers: dict[str, str],
) -> dict[str, Any]:
    phases = Phases()
    settings = Settings(
        environment="test",
        database_url=services.postgres.url,
        log_level="WARNING",
        # Loading statements run for minutes; the service's 30 s limit is for requests.
        database=DatabaseSettings(command_timeout_s=3600, pool_max_size=6),
    )
    pool = await create_pool(settings, "bench-aggregates")
    fleet = aggdata.fleet(layout.devices)
    out: dict[str, Any] = {
        "devices": layout.devices,
        "raw_hours": layout.raw_hours,
        "hour_days": layout.hour_days,
        "tier_days": layout.tier_days,
    }
    try:
        print(f"dataset: {layout.devices:,} devices", flush=True)
        out["rows"] = await load(pool, layout, phases)
        stack = LiveStack(
            services, layout.devices, args.ingest_rate, args.concurrency + 2, args.api_live
        )
        live_from = datetime.now(UTC) - timedelta(seconds=5)
        try:
            # Let the stream reach a steady state (ingest and worker warm, minutes dirty).
            await asyncio.sleep(args.warmup_s)
            counted_from, counted_at = await stored_since(pool, live_from), time.monotonic()
            results = []
            base_url = f"http://127.0.0.1:{stack.port}"
            began = time.perf_counter()
            for scenario in SCENARIOS:
                if wide_only and not scenario.wide:
                    continue
                requests = max(10, round(scenario.requests * args.request_scale))
                result: dict[str, Any] = {
                    "scenario": scenario.name,
                    "target_ms": TARGETS_MS[scenario.target],
                }
                result |= await measure_api(
                    base_url, headers, scenario, fleet, args.concurrency, requests, args.scenario_s
                )
                raw = await measure_raw(pool, scenario, fleet, layout, args.raw_repeats)
                if raw is not None:
                    result |= raw
                    result["ratio_raw_over_api_p50"] = round(
                        raw["raw_p50_ms"] / result["p50_ms"], 1
                    )
                result["met"] = result["p99_ms"] <= result["target_ms"]
                print(json.dumps(result), flush=True)
                results.append(result)
            phases.seconds["measurement"] = round(time.perf_counter() - began, 1)
            stored = await stored_since(pool, live_from) - counted_from
            out["ingest_stored_per_s"] = round(stored / (time.monotonic() - counted_at))
            out["dirty_minutes_at_end"] = await pool.fetchval("SELECT count(*) FROM rollup_dirty")
        finally:
            out |= stack.stop()
        out["results"] = results
        out["phases_s"] = phases.seconds
    finally:
        await pool.close()
    return out


def markdown(report: dict[str, Any]) -> str:
    """The run's tables for docs/benchmarks.md (bench/results/aggregates.md)."""
    lines = []
    for dataset in report["datasets"]:
        lines += [
            f"#### {dataset['devices']:,} devices: raw {dataset['raw_hours']:g} h at one a minute"
            f" ({dataset['rows']['raw']:,} rows), tiers {dataset['tier_days']} days;"
            f" ingest stored {dataset['ingest_stored_per_s']:,} readings/s alongside",
            "",
            "| scenario | requests | p50 ms | p99 ms | target p99 | met | raw p50 ms | raw / api |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in dataset["results"]:
            raw = r.get("raw_p50_ms")
            ratio = r.get("ratio_raw_over_api_p50")
            lines.append(
                f"| {r['scenario']} | {r['requests']} | {r['p50_ms']:,} | {r['p99_ms']:,}"
                f" | {r['target_ms']:g} | {'yes' if r['met'] else 'no'}"
                f" | {'-' if raw is None else f'{raw:,}'} | {'-' if ratio is None else ratio} |"
            )
        lines += ["", "| phase | seconds |", "|---|---|"]
        lines += [f"| {name} | {sec:,} |" for name, sec in dataset["phases_s"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--raw-days", type=float, default=30, help="raw at one reading a minute")
    parser.add_argument("--tier-days", type=int, default=365)
    parser.add_argument(
        "--hour-days", type=int, default=None, help="hour tier days before raw (default: all)"
    )
    parser.add_argument("--wide-devices", type=int, default=10_000, help="0 skips that fleet")
    parser.add_argument("--wide-raw-hours", type=float, default=6)
    parser.add_argument("--wide-hour-days", type=int, default=30)
    parser.add_argument("--wide-tier-days", type=int, default=365)
    parser.add_argument("--ingest-rate", type=float, default=10_000, help="readings a second")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup-s", type=float, default=20)
    parser.add_argument("--request-scale", type=float, default=1.0)
    parser.add_argument("--raw-repeats", type=int, default=3)
    parser.add_argument(
        "--api-live", action="store_true", help="keep the api's own live-feed subscription on"
    )
    parser.add_argument(
        "--scenario-s", type=float, default=60, help="longest a scenario's requests may take"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "load_average_at_start": os.getloadavg(),
        "concurrency": args.concurrency,
        "ingest_rate_asked": args.ingest_rate,
        "arguments": vars(args),
        "datasets": [],
    }
    hour_days = args.hour_days
    if hour_days is None:
        hour_days = args.tier_days - int(args.raw_days)
    layouts = [(Layout(args.devices, args.raw_days * 24, hour_days, args.tier_days), False)]
    if args.wide_devices:
        layouts.append(
            (
                Layout(
                    args.wide_devices, args.wide_raw_hours, args.wide_hour_days, args.wide_tier_days
                ),
                True,
            )
        )
    for layout, wide_only in layouts:
        with private_services() as services:
            report["datasets"].append(
                asyncio.run(
                    measure_dataset(services, layout, args, wide_only, services.reader_headers())
                )
            )
        # What is measured so far survives a later dataset's failure.
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        RESULTS.with_suffix(".md").write_text(markdown(report))
    report["total_s"] = round(time.perf_counter() - began, 1)
    report["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(markdown(report))
    print(f"written {RESULTS} after {report['total_s']} s")


if __name__ == "__main__":
    main()
