"""``make bench``: the pipeline measured against its ceilings, on a private local stack.

Ceilings: a bare gmqtt subscriber (and paho-mqtt for comparison) draining the same backlog, and
a bare COPY into the same hypertable. Then ingest's drain rate for single and batched messages,
with a publisher alongside, latency publish -> stored at half the peak rate, API latency, and
peak memory. Prints a table and writes bench/results/pipeline.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvloop
from rich.console import Console
from rich.table import Table

from bench.harness import (
    BenchServices,
    Process,
    ingest_env,
    login_url,
    percentile,
    private_services,
    process_env,
    publish_all,
)
from core.config import Settings
from core.mqtt import connect, make_client, publish_when_possible
from devices.contract import Kind, telemetry_topic
from stack.services import free_port

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()
DEVICES = 1000


def step(text: str) -> None:
    console.log(f"[bold cyan]{text}")


class Scenario:
    """Readings of one measurement: distinct (device, ts) from every other scenario's."""

    counter = 0

    def __init__(self, readings: int, per_message: int = 1) -> None:
        Scenario.counter += 1
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=6)
        self.base += timedelta(hours=Scenario.counter)
        self.readings = readings
        self.per_message = per_message

    def messages(self) -> list[tuple[str, bytes]]:
        by_device: dict[int, list[dict[str, Any]]] = {}
        for n in range(self.readings):
            ts = self.base + timedelta(milliseconds=(n // DEVICES) * 10)
            reading = {"ts": ts.isoformat(), "vehicle_count": n % 50, "avg_speed_kmh": 42.5}
            by_device.setdefault(n % DEVICES, []).append(reading)
        out = []
        for device, readings in by_device.items():
            topic = telemetry_topic(Kind.TRAFFIC, f"bench-{device:04d}")
            for start in range(0, len(readings), self.per_message):
                chunk = readings[start : start + self.per_message]
                out.append((topic, orjson.dumps(chunk if self.per_message > 1 else chunk[0])))
        # Interleave devices the way a city publishes, not one device's history after another.
        out.sort(key=lambda item: hash(item[1]))
        return out

    async def stored(self, pool: asyncpg.Pool) -> int:
        count: int = await pool.fetchval(
            "SELECT count(*) FROM traffic_readings WHERE ts >= $1 AND ts < $2",
            self.base,
            self.base + timedelta(hours=1),
        )
        return count


async def register_bench_devices(pool: asyncpg.Pool) -> None:
    """The devices every scenario's readings come from."""
    await pool.executemany(
        "INSERT INTO devices (device_id, kind, district) VALUES ($1, 'traffic', 'gate')",
        [(f"bench-{n:04d}",) for n in range(DEVICES)],
    )


async def wait_consuming(settings: Settings, pool: asyncpg.Pool, timeout_s: float = 120) -> None:
    """Until an ingester just started stores a probe reading: its session and subscription (or
    its consumer of the queue) exist, so a backlog published now waits for it. A fixed pause
    is not enough on a loaded machine, where a start can take longer than any guess."""
    client = make_client(
        settings.mqtt_as(settings.simulator), f"bench-probe-{uuid.uuid4().hex[:6]}"
    )
    await connect(client, settings.mqtt_as(settings.simulator))
    # Older than every scenario's hour, so no count of theirs includes it.
    ts = datetime.now(UTC) - timedelta(days=6, minutes=30, microseconds=uuid.uuid4().int % 10**9)
    device_id = "bench-0000"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ts += timedelta(milliseconds=1)
            payload = orjson.dumps({"ts": ts.isoformat(), "vehicle_count": 0})
            await publish_when_possible(client, telemetry_topic(Kind.TRAFFIC, device_id), payload)
            for _ in range(10):
                await asyncio.sleep(0.1)
                stored = await pool.fetchval(
                    "SELECT count(*) FROM traffic_readings WHERE device_id = $1 AND ts = $2",
                    device_id,
                    ts,
                )
                if stored:
                    return
        raise TimeoutError(f"the ingester stored no probe within {timeout_s:.0f}s")
    finally:
        await client.disconnect()


async def wait_stored(pool: asyncpg.Pool, scenario: Scenario, timeout_s: float = 300) -> float:
    """Readings per second from the first stored row to the last."""
    deadline = time.monotonic() + timeout_s
    first_at = first_count = None
    while time.monotonic() < deadline:
        count = await scenario.stored(pool)
        now = time.perf_counter()
        if count and first_at is None:
            first_at, first_count = now, count
        if count >= scenario.readings:
            if first_at is None or first_count is None or now == first_at:
                return float("nan")
            return (count - first_count) / (now - first_at)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"only {await scenario.stored(pool)} of {scenario.readings} stored")


async def bare_copy(pool: asyncpg.Pool, rows: int) -> float:
    base = datetime.now(UTC) - timedelta(days=5)
    records = [
        (
            f"copy-{n % DEVICES:04d}",
            base + timedelta(milliseconds=n),
            base,
            n % 50,
            None,
            42.5,
            None,
            None,
        )
        for n in range(rows)
    ]
    columns = [
        "device_id",
        "ts",
        "received_at",
        "vehicle_count",
        "interval_s",
        "avg_speed_kmh",
        "occupancy_pct",
        "heavy_vehicle_count",
    ]
    async with pool.acquire() as conn:
        started = time.perf_counter()
        await conn.copy_records_to_table("traffic_readings", records=records, columns=columns)
        elapsed = time.perf_counter() - started
        await conn.execute("DELETE FROM traffic_readings WHERE device_id LIKE 'copy-%'")
    return rows / elapsed


async def bare_subscribers(settings: Settings, lib: str, processes: int, readings: int) -> float:
    group = f"bare{uuid.uuid4().hex[:6]}"
    ids = [f"{group}-{n}" for n in range(processes)]
    common = ["--lib", lib, "--url", login_url(settings, "ingest"), "--share-group", group]
    for client_id in ids:
        Process("bench.subscriber", *common, "--client-id", client_id, "--prepare").output()
    await publish_all(settings, Scenario(readings).messages())
    subs = [
        Process("bench.subscriber", *common, "--client-id", cid, "--count", str(readings))
        for cid in ids
    ]
    results = [json.loads(await asyncio.to_thread(sub.output)) for sub in subs]
    total = sum(r["received"] for r in results)
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    return float(total / span)


async def ingest_drain(
    settings: Settings, pool: asyncpg.Pool, processes: int, scenario: Scenario
) -> tuple[float, float]:
    """Backlog first, ingest after: the drain rate, and the ingesters' peak RSS."""
    group = f"ing{uuid.uuid4().hex[:6]}"
    envs = [ingest_env(settings, f"{group}-{n}", group) for n in range(processes)]
    # First start creates each persistent session and subscription; then the backlog queues.
    warm = [Process("ingest", env=env) for env in envs]
    await wait_consuming(settings, pool)
    for process in warm:
        process.stop()
    await publish_all(settings, scenario.messages())
    ingesters = [Process("ingest", env=env) for env in envs]
    try:
        rate = await wait_stored(pool, scenario)
    finally:
        for process in ingesters:
            process.stop()
    return rate, max(p.peak_rss_mib for p in ingesters)


async def ingest_alongside(settings: Settings, pool: asyncpg.Pool, readings: int) -> float:
    ingester = Process("ingest", env=ingest_env(settings, f"along-{uuid.uuid4().hex[:6]}"))
    try:
        await wait_consuming(settings, pool)
        scenario = Scenario(readings)
        messages = scenario.messages()
        started = time.perf_counter()
        await publish_all(settings, messages)
        while await scenario.stored(pool) < readings:  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.05)
        return readings / (time.perf_counter() - started)
    finally:
        ingester.stop()


async def latency_to_stored(
    settings: Settings, pool: asyncpg.Pool, rate: float, seconds: float
) -> list[float]:
    """Publish at ``rate`` with ts = send time; a poller notes when each row becomes visible."""
    ingester = Process("ingest", env=ingest_env(settings, f"lat-{uuid.uuid4().hex[:6]}"))
    latencies: list[float] = []
    try:
        await wait_consuming(settings, pool)
        client = make_client(
            settings.mqtt_as(settings.simulator), f"bench-lat-{uuid.uuid4().hex[:6]}"
        )
        await connect(client, settings.mqtt_as(settings.simulator))
        sent: dict[tuple[str, datetime], float] = {}
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set() or sent:
                rows = await pool.fetch(
                    "SELECT device_id, ts FROM traffic_readings WHERE device_id LIKE 'bench-%'"
                    " AND ts > now() - interval '10 seconds'"
                )
                now = time.time()
                for row in rows:
                    sent_at = sent.pop((row["device_id"], row["ts"]), None)
                    if sent_at is not None:
                        latencies.append(now - sent_at)
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll())
        tick = 0.01
        per_tick = rate * tick
        owed = 0.0
        n = 0
        last_ts: dict[int, datetime] = {}
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                device = n % DEVICES
                n += 1
                now = time.time()
                ts = datetime.fromtimestamp(round(now, 3), UTC)
                if device in last_ts and ts <= last_ts[device]:
                    ts = last_ts[device] + timedelta(milliseconds=1)
                last_ts[device] = ts
                device_id = f"bench-{device:04d}"
                sent[(device_id, ts)] = now
                payload = orjson.dumps({"ts": ts.isoformat(), "vehicle_count": 1})
                await publish_when_possible(
                    client, telemetry_topic(Kind.TRAFFIC, device_id), payload
                )
            await asyncio.sleep(tick)
        stop.set()
        await asyncio.wait_for(poller, timeout=30)
        await client.disconnect()
    finally:
        ingester.stop()
    return latencies


async def live_latency(services: BenchServices, pool: asyncpg.Pool, seconds: float) -> list[float]:
    """Publish air readings with ts = send time; an SSE client of the api notes each arrival."""
    devices = [f"live-{n:02d}" for n in range(20)]
    await pool.executemany(
        "INSERT INTO devices (device_id, kind, district) VALUES ($1, 'air', 'green')",
        [(d,) for d in devices],
    )
    settings = services.settings()
    headers = await asyncio.to_thread(services.reader_headers)
    api, port = start_api(settings)
    sent: dict[tuple[str, str], float] = {}
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers
        ) as http:
            await wait_healthy(http, port)
            ready = asyncio.Event()

            async def listen() -> None:
                async with http.stream("GET", "/api/v1/live", params={"kind": "air"}) as stream:
                    event = ""
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                            ready.set()
                        elif line.startswith("data: ") and event == "reading":
                            reading = orjson.loads(line[6:])
                            key = (reading["device_id"], reading["ts"])
                            sent_at = sent.pop(key, None)
                            if sent_at is not None:
                                latencies.append(time.time() - sent_at)

            listener = asyncio.create_task(listen())
            await asyncio.wait_for(ready.wait(), timeout=30)
            client = make_client(
                settings.mqtt_as(settings.simulator), f"bench-live-{uuid.uuid4().hex[:6]}"
            )
            await connect(client, settings.mqtt_as(settings.simulator))
            deadline = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < deadline:
                for device in devices:
                    now = time.time()
                    ts = datetime.fromtimestamp(round(now, 3), UTC)
                    reading = {"ts": ts.isoformat(), "pm2_5": float(n % 90)}
                    sent[(device, ts.isoformat().replace("+00:00", "Z"))] = now
                    sent[(device, ts.isoformat())] = now
                    await publish_when_possible(
                        client, telemetry_topic(Kind.AIR, device), orjson.dumps(reading)
                    )
                n += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)
            listener.cancel()
            await client.disconnect()
    finally:
        api.stop()
    return latencies


def start_api(settings: Settings, port: int | None = None, **extra: str) -> tuple[Process, int]:
    """The api as a real process on a free port (or ``port``) of the benchmark's services;
    ``extra`` environment variables on top."""
    port = port or free_port()
    env = {**process_env(settings), "ALATAU_API__PORT": str(port), **extra}
    return Process("api", env=env), port


async def wait_healthy(client: httpx.AsyncClient, port: int) -> None:
    for _ in range(300):
        try:
            health = await client.get(f"http://127.0.0.1:{port}/api/v1/health")
            if health.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the api never became healthy")


async def api_latency(services: BenchServices, pool: asyncpg.Pool) -> tuple[dict[str, Any], float]:
    """Latest, raw and aggregate queries with 8 concurrent clients, on 24 h of 1-minute data."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    devices = [f"api-{n:03d}" for n in range(100)]
    await pool.executemany(
        "INSERT INTO devices (device_id, kind, district) VALUES ($1, 'traffic', 'gate')",
        [(d,) for d in devices],
    )
    records = [
        (device, start + timedelta(minutes=m), start, m % 40, 60.0, 30.0 + m % 30, 12.5, 1)
        for device in devices
        for m in range(1440)
    ]
    await pool.copy_records_to_table(
        "traffic_readings",
        records=records,
        columns=[
            "device_id",
            "ts",
            "received_at",
            "vehicle_count",
            "interval_s",
            "avg_speed_kmh",
            "occupancy_pct",
            "heavy_vehicle_count",
        ],
    )
    await pool.execute("ANALYZE traffic_readings")
    headers = await asyncio.to_thread(services.reader_headers)
    api, port = start_api(services.settings())
    base = f"http://127.0.0.1:{port}/api/v1"
    frm, to = start.isoformat(), (start + timedelta(days=1)).isoformat()
    queries: dict[str, Callable[[int], tuple[str, dict[str, str]]]] = {
        "latest (one device)": lambda n: (f"/devices/{devices[n % 100]}/latest", {}),
        "latest (all traffic)": lambda n: ("/latest", {"kind": "traffic"}),
        "raw (1 h of one device)": lambda n: (
            f"/devices/{devices[n % 100]}/readings",
            {"from": frm, "to": (start + timedelta(hours=1)).isoformat()},
        ),
        "aggregate (24 h at 1 min)": lambda n: (
            f"/devices/{devices[n % 100]}/aggregates",
            {"metric": "avg_speed_kmh", "bucket": "1m", "from": frm, "to": to},
        ),
    }
    results: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as client:
            await wait_healthy(client, port)
            for name, query in queries.items():
                timings: list[float] = []

                async def worker(
                    offset: int, query: Any = query, timings: list[float] = timings
                ) -> None:
                    for n in range(offset, 400, 8):
                        path, params = query(n)
                        began = time.perf_counter()
                        response = await client.get(path, params=params)
                        timings.append(time.perf_counter() - began)
                        response.raise_for_status()

                await asyncio.gather(*(worker(k) for k in range(8)))
                results[name] = {
                    "p50_ms": percentile(timings, 50) * 1000,
                    "p99_ms": percentile(timings, 99) * 1000,
                }
    finally:
        api.stop()
    return results, api.peak_rss_mib


async def run(quick: bool) -> dict[str, Any]:
    single = 30_000 if quick else 100_000
    batched = 50_000 if quick else 200_000
    figures: dict[str, Any] = {}
    with private_services() as services:
        settings = services.settings()
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
        try:
            await register_bench_devices(pool)
            step("ceiling: bare COPY into traffic_readings")
            figures["copy"] = await bare_copy(pool, 200_000)
            for processes in (1, 2):
                step(f"ceiling: bare gmqtt subscriber x{processes} draining {single:,} messages")
                figures[f"gmqtt_x{processes}"] = await bare_subscribers(
                    settings, "gmqtt", processes, single
                )
            # Ingest receives through its own bulk-ack path, which outruns gmqtt's stock one; a
            # bare subscriber on that same path is the ceiling of the receive side as built.
            step(f"ceiling: bare bulk-ack subscriber x1 draining {single:,} messages")
            figures["bulk_x1"] = await bare_subscribers(settings, "gmqtt-bulk", 1, single)
            step(f"comparison: bare paho-mqtt subscriber x1 draining {single:,} messages")
            figures["paho_x1"] = await bare_subscribers(settings, "paho", 1, single)
            rss = []
            for processes in (1, 2):
                step(f"ingest x{processes}: drain {single:,} single-reading messages")
                rate, peak = await ingest_drain(settings, pool, processes, Scenario(single))
                figures[f"ingest_single_x{processes}"] = rate
                rss.append(peak)
            step(f"ingest x1: drain {batched:,} readings in arrays of 100")
            rate, peak = await ingest_drain(settings, pool, 1, Scenario(batched, per_message=100))
            figures["ingest_batched_x1"] = rate
            rss.append(peak)
            step(f"ingest x1 with the publisher alongside: {single:,} messages")
            figures["ingest_alongside_x1"] = await ingest_alongside(settings, pool, single)
            half = figures["ingest_single_x1"] / 2
            step(f"latency publish -> stored at {half:,.0f} readings/s for 10 s")
            latencies = await latency_to_stored(settings, pool, half, 10)
            figures["latency_rate"] = half
            figures["latency_p50_ms"] = percentile(latencies, 50) * 1000
            figures["latency_p99_ms"] = percentile(latencies, 99) * 1000
            figures["latency_samples"] = len(latencies)
            figures["ingest_peak_rss_mib"] = max(rss)
            step("latency publish -> live-feed client (SSE), 400 readings/s for 10 s")
            live = await live_latency(services, pool, 10)
            figures["live_p50_ms"] = percentile(live, 50) * 1000
            figures["live_p99_ms"] = percentile(live, 99) * 1000
            figures["live_samples"] = len(live)
            step("API latency, 8 concurrent clients")
            figures["api"], figures["api_peak_rss_mib"] = await api_latency(services, pool)
        finally:
            await pool.close()
    return figures


def report(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    def rate(value: float) -> str:
        return f"{value:,.0f}/s"

    def ratio(value: float, ceiling: float) -> str:
        return f"{value / ceiling:.2f}"

    rows = [
        ("bare COPY into the hypertable (rows)", rate(figures["copy"]), "ceiling", ""),
        ("bare gmqtt subscriber x1, QoS 1", rate(figures["gmqtt_x1"]), "ceiling", ""),
        ("bare gmqtt subscriber x2, QoS 1", rate(figures["gmqtt_x2"]), "ceiling", ""),
        (
            "bare subscriber on ingest's bulk-ack path x1, QoS 1",
            rate(figures["bulk_x1"]),
            f"{figures['bulk_x1'] / figures['gmqtt_x1']:.1f}x stock gmqtt",
            "",
        ),
        (
            "bare paho-mqtt subscriber x1, QoS 1",
            rate(figures["paho_x1"]),
            f"{figures['paho_x1'] / figures['gmqtt_x1']:.2f} of gmqtt",
            "",
        ),
        (
            "ingest x1, single readings, backlog",
            rate(figures["ingest_single_x1"]),
            f"{ratio(figures['ingest_single_x1'], figures['gmqtt_x1'])} of gmqtt; "
            f"{ratio(figures['ingest_single_x1'], figures['bulk_x1'])} of bulk-ack",
            ">= 60,000/s; >= 0.8",
        ),
        (
            "ingest x2, single readings, backlog",
            rate(figures["ingest_single_x2"]),
            ratio(figures["ingest_single_x2"], figures["gmqtt_x2"]),
            ">= 60,000/s; >= 0.8",
        ),
        (
            "ingest x1, single readings, publisher alongside",
            rate(figures["ingest_alongside_x1"]),
            "",
            ">= 40,000/s",
        ),
        (
            "ingest x1, arrays of 100, backlog",
            rate(figures["ingest_batched_x1"]),
            ratio(figures["ingest_batched_x1"], figures["copy"]),
            ">= 150,000/s; >= 0.65 of COPY",
        ),
        (
            f"publish -> stored p50 at {figures['latency_rate']:,.0f}/s",
            f"{figures['latency_p50_ms']:.0f} ms",
            "",
            "",
        ),
        (
            f"publish -> stored p99 at {figures['latency_rate']:,.0f}/s",
            f"{figures['latency_p99_ms']:.0f} ms",
            "",
            "<= 1,000 ms",
        ),
        (
            "publish -> live SSE client p50 / p99 (400/s)",
            f"{figures['live_p50_ms']:.1f} / {figures['live_p99_ms']:.1f} ms",
            "",
            "p99 <= 100 ms",
        ),
    ]
    for name, timing in figures["api"].items():
        target = "p99 <= 50 ms" if name.startswith("aggregate") else ""
        rows.append(
            (
                f"API {name} p50 / p99",
                f"{timing['p50_ms']:.1f} / {timing['p99_ms']:.1f} ms",
                "",
                target,
            )
        )
    rows.append(
        (
            "peak RSS ingest / api",
            f"{figures['ingest_peak_rss_mib']:.0f} / {figures['api_peak_rss_mib']:.0f} MiB",
            "",
            "",
        )
    )
    return rows


def write_results(figures: dict[str, Any], meta: dict[str, Any]) -> None:
    rows = report(figures)
    table = Table(title="Alatau pipeline benchmark")
    for column in ("measure", "figure", "ratio to ceiling", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(
        json.dumps({**meta, "figures": figures}, indent=2) + "\n"
    )
    markdown = [
        f"Run {meta['date']} on {meta['machine']} ({meta['seconds']} s).",
        "",
        "| measure | figure | ratio to ceiling | target |",
        "|---|---|---|---|",
    ]
    markdown += [f"| {' | '.join(row)} |" for row in rows]
    (RESULTS / "pipeline.md").write_text("\n".join(markdown) + "\n")
    console.log(f"written {RESULTS / 'pipeline.json'} and pipeline.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller backlogs, for a smoke run")
    parser.add_argument(
        "--render", action="store_true", help="only print and write the saved results again"
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "pipeline.json").read_text())
        figures = saved.pop("figures")
        write_results(figures, saved)
        return
    started = time.perf_counter()
    figures = uvloop.run(run(args.quick))
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(figures, meta)


if __name__ == "__main__":
    main()
