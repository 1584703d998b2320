"""``python -m bench.aggregates``: a year of readings for 1,000 devices, rolled up, and the p50/p99
latency of the aggregate and KPI endpoints under concurrent clients.

Everything runs on a private TimescaleDB (free port, temporary folder) and the API as its own
process (``python -m api``) on a free port. Readings are loaded with COPY (one reading per device
every ``--interval-min`` minutes), the tiers are backfilled in bulk, and the newest day is left to
the rollup worker, as live data would be, so queries also read dirty buckets from raw.
Results go to bench/results/aggregates.json; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench.harness import ROOT, Process, median, percentile, private_services
from core.config import Settings
from core.db import create_pool
from devices.contract import District, Kind, metric_names, readings_table
from rollups import service as rollups
from stack.broker_auth import login_environment
from stack.services import free_port, port_open

RESULTS = ROOT / "bench" / "results" / "aggregates.json"
END = datetime(2026, 11, 1, tzinfo=UTC)


def devices(count: int) -> list[tuple[str, Kind, District]]:
    kinds, districts = list(Kind), list(District)
    return [
        (f"bench-{kinds[n % 3].value}-{n:04d}", kinds[n % 3], districts[(n // 3) % 4])
        for n in range(count)
    ]


def _row(kind: Kind, device_id: str, ts: datetime, state: dict[str, float]) -> tuple[Any, ...]:
    r = random.random
    if kind is Kind.TRAFFIC:
        return (device_id, ts, int(r() * 900), 3600.0, 20 + r() * 50, r() * 60, int(r() * 90))
    if kind is Kind.ENERGY:
        register = state.get(device_id, 0.0) + r() * 5
        if r() < 0.0005:  # an occasional meter reset
            register = r()
        state[device_id] = register
        return (device_id, ts, register, r() * 50, 220 + r() * 15, r() * 200, 0.8 + r() * 0.2)
    return (
        device_id,
        ts,
        r() * 80,
        r() * 150,
        r() * 90,
        r() * 30,
        r() * 120,
        r() * 3000,
        -20 + r() * 50,
        r() * 100,
        900 + r() * 50,
    )


def load(url: str, fleet: list[tuple[str, Kind, District]], days: int, step: timedelta) -> int:
    """COPY ``days`` of readings, a day at a time so each chunk is written once."""
    with psycopg.connect(url, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy("COPY devices (device_id, kind, district) FROM STDIN") as copy,
        ):
            for device_id, kind, district in fleet:
                copy.write_row((device_id, kind.value, district.value))
        total, state = 0, dict[str, float]()
        start = END - timedelta(days=days)
        for day in range(days):
            day_start = start + timedelta(days=day)
            for kind in Kind:
                columns = ", ".join(("device_id", "ts", *metric_names(kind)))
                ids = [d for d, k, _ in fleet if k is kind]
                with (
                    conn.cursor() as cur,
                    cur.copy(f"COPY {readings_table(kind)} ({columns}) FROM STDIN") as copy,
                ):
                    ts = day_start
                    while ts < day_start + timedelta(days=1):
                        for n, device_id in enumerate(ids):
                            # Devices report at staggered seconds, not all on the same instant.
                            copy.write_row(
                                _row(kind, device_id, ts + timedelta(seconds=n % 59), state)
                            )
                            total += 1
                        ts += step
    return total


def mark_last_day_dirty(url: str) -> int:
    """The newest day is left for the worker, the way ingest leaves it."""
    with psycopg.connect(url, autocommit=True) as conn:
        marked = 0
        for kind in Kind:
            cur = conn.execute(
                "INSERT INTO rollup_dirty (kind, device_id, minute)"
                f" SELECT DISTINCT %s, device_id, time_bucket(INTERVAL '1 minute', ts)"
                f" FROM {readings_table(kind)} WHERE ts >= %s",
                (kind.value, END - timedelta(days=1)),
            )
            marked += cur.rowcount
        return marked


Scenario = tuple[str, int, Callable[[random.Random], tuple[str, dict[str, str]]]]


def scenarios(fleet: list[tuple[str, Kind, District]], days: int) -> list[Scenario]:
    by_kind = {kind: [d for d, k, _ in fleet if k is kind] for kind in Kind}

    def window(rng: random.Random, span: timedelta) -> dict[str, str]:
        # Unaligned ends, within the loaded year, often reaching the newest (dirty) day.
        latest = END - timedelta(minutes=rng.randrange(0, 3 * 24 * 60), seconds=rng.randrange(60))
        earliest = max(latest - span, END - timedelta(days=days))
        return {"from": earliest.isoformat(), "to": latest.isoformat()}

    def device(
        kind: Kind, metric: str, bucket: str, fn: str, span: timedelta
    ) -> Callable[..., Any]:
        def make(rng: random.Random) -> tuple[str, dict[str, str]]:
            device_id = rng.choice(by_kind[kind])
            params = {"metric": metric, "bucket": bucket, "fn": fn} | window(rng, span)
            return f"/api/v1/devices/{device_id}/aggregates", params

        return make

    def area(path: str, metric: str, bucket: str, fn: str, span: timedelta) -> Callable[..., Any]:
        def make(rng: random.Random) -> tuple[str, dict[str, str]]:
            target = path.format(district=rng.choice(list(District)).value)
            return target, {"metric": metric, "bucket": bucket, "fn": fn} | window(rng, span)

        return make

    def kpi(path: str) -> Callable[..., Any]:
        def make(rng: random.Random) -> tuple[str, dict[str, str]]:
            target = path.format(district=rng.choice(list(District)).value)
            at = END - timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
            return target, {"at": at.isoformat()}

        return make

    day, year = timedelta(days=1), timedelta(days=365)
    district, city = "/api/v1/districts/{district}/aggregates", "/api/v1/city/aggregates"
    return [
        ("device 24 h, 1m buckets (1m tier)", 300, device(Kind.AIR, "pm2_5", "1m", "avg", day)),
        ("device 24 h, 1h buckets (1h tier)", 300, device(Kind.AIR, "pm2_5", "1h", "max", day)),
        (
            "device 30 d, 1h buckets",
            300,
            device(Kind.TRAFFIC, "vehicle_count", "1h", "sum", 30 * day),
        ),
        ("device 1 y, 1d buckets (1d tier)", 300, device(Kind.AIR, "pm10", "1d", "avg", year)),
        (
            "device 1 y, 1mo energy increase",
            300,
            device(Kind.ENERGY, "energy_kwh", "1mo", "increase", year),
        ),
        ("device 24 h, 30s buckets (raw)", 100, device(Kind.AIR, "no2", "30s", "avg", day)),
        ("district 7 d, 1h buckets", 200, area(district, "avg_speed_kmh", "1h", "avg", 7 * day)),
        ("district 1 y, 1d buckets", 100, area(district, "power_kw", "1d", "avg", year)),
        ("city 24 h, 15m buckets", 200, area(city, "pm2_5", "15m", "avg", day)),
        ("city 1 y, 1mo buckets", 50, area(city, "vehicle_count", "1mo", "rate", year)),
        ("district summary (KPIs)", 50, kpi("/api/v1/districts/{district}/summary")),
        ("city summary (KPIs)", 20, kpi("/api/v1/city/summary")),
    ]


async def measure(
    base_url: str, scenario: Scenario, concurrency: int, headers: dict[str, str]
) -> dict[str, Any]:
    name, requests, make = scenario
    rng = random.Random(name)
    jobs = [make(rng) for _ in range(requests)]
    latencies: list[float] = []
    sizes: list[int] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=headers) as http:
            while jobs:
                path, params = jobs.pop()
                started = time.perf_counter()
                response = await http.get(path, params=params)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
                sizes.append(len(response.json().get("items", [])))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "scenario": name,
        "requests": requests,
        "p50_ms": round(median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "req_per_s": round(requests / elapsed, 1),
        "buckets_median": median([float(s) for s in sizes]),
    }


async def roll(url: str, start: datetime, end: datetime) -> tuple[float, float, int]:
    settings = Settings(environment="test", database_url=url, log_level="WARNING")
    pool = await create_pool(settings, "bench-rollups")
    try:
        began = time.perf_counter()
        await rollups.backfill(pool, start, end, step_days=7)
        backfill_s = time.perf_counter() - began
        marked = mark_last_day_dirty(url)
        began = time.perf_counter()
        await rollups.roll_up(pool, batch=5000)
        worker_s = time.perf_counter() - began
    finally:
        await pool.close()
    return backfill_s, worker_s, marked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--interval-min", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    fleet = devices(args.devices)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "devices": args.devices,
        "days": args.days,
        "interval_min": args.interval_min,
        "concurrency": args.concurrency,
    }
    # The API's live feeds subscribe to the broker at start-up, so it gets one too.
    with private_services() as services:
        postgres = services.postgres
        began = time.perf_counter()
        rows = load(postgres.url, fleet, args.days, timedelta(minutes=args.interval_min))
        report["rows"] = rows
        report["load_s"] = round(time.perf_counter() - began, 1)
        print(f"loaded {rows:,} readings in {report['load_s']} s", flush=True)
        # Backfill all but the newest day; the worker then rolls that day up from dirty minutes.
        backfill_s, worker_s, marked = asyncio.run(
            roll(postgres.url, END - timedelta(days=args.days), END - timedelta(days=1))
        )
        report |= {
            "backfill_s": round(backfill_s, 1),
            "dirty_minutes": marked,
            "worker_s": round(worker_s, 1),
        }
        print(
            f"backfilled in {backfill_s:.1f} s;"
            f" worker rolled {marked:,} dirty minutes in {worker_s:.1f} s"
        )
        # Leave a few hours dirty so the measured queries also read raw for the newest buckets.
        mark_recent = (
            "INSERT INTO rollup_dirty (kind, device_id, minute) SELECT DISTINCT %s, device_id,"
            " time_bucket(INTERVAL '1 minute', ts) FROM {} WHERE ts >= %s ON CONFLICT DO NOTHING"
        )
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            for kind in Kind:
                conn.execute(
                    mark_recent.format(readings_table(kind)),
                    (kind.value, END - timedelta(hours=6)),
                )
            conn.execute("VACUUM ANALYZE")
        port = free_port()
        headers = services.reader_headers()
        api = Process(
            "api",
            env={
                "DATABASE_URL": postgres.url,
                "MQTT_URL": services.broker.url,
                **login_environment(services.settings()),
                "ALATAU_API__PORT": str(port),
                "ALATAU_LOG_LEVEL": "WARNING",
                "ALATAU_DATABASE__POOL_MAX_SIZE": str(args.concurrency + 2),
            },
        )
        try:
            deadline = time.monotonic() + 60
            while not port_open(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            results = []
            for scenario in scenarios(fleet, args.days):
                result = asyncio.run(
                    measure(f"http://127.0.0.1:{port}", scenario, args.concurrency, headers)
                )
                print(json.dumps(result), flush=True)
                results.append(result)
            report["results"] = results
            report["api_peak_rss_mib"] = round(api.peak_rss_mib, 1)
        finally:
            api.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
