"""``make bench-edges``: the Mosquitto edge and the RabbitMQ city edge side by side, in one run.

For each edge, on one private TimescaleDB: the publish rate of a backlog into the edge; a bare
consumer of the queue ingest reads (a gmqtt subscriber on ingest's bulk-ack path for Mosquitto,
an aiormq consumer of the quorum queue with ingest's prefetch and acknowledgements for the
cluster), the ceiling of single readings; ingest's drain of single readings and of arrays of 100
(the arrays' ceiling is a bare COPY, one for both); publish -> stored latency at half the edge's
peak (the lower of its publish and drain rates); the broker's resident memory per connected
device (simulated devices with Last Will and retained status, first, on a fresh broker); and
commissioning through the api's bulk route: 100,000 devices on the city edge, and on Mosquitto
as many as fit in a time budget (its dynamic-security store is rewritten after every command),
extrapolated.
Writes bench/results/edges.json and .md; ``--render`` prints them again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import httpx
import uvloop
from rich.table import Table

from api.keys.schemas import Role
from bench.harness import (
    Process,
    login_url,
    median,
    percentile,
    private_edge,
    private_services,
    publish_all,
    rss_mib,
)
from bench.pipeline import (
    RESULTS,
    Scenario,
    bare_copy,
    console,
    ingest_drain,
    latency_to_stored,
    register_bench_devices,
    start_api,
    step,
    wait_healthy,
)
from core.config import Settings
from devices.schemas import MqttLogin
from simulators.fleet import build_fleet
from simulators.schemas import SimDevice
from simulators.service import Simulation
from stack.rabbitmq_topology import INGEST_QUEUE

CITY_FLEET: Final = 100_000
BULK_BATCH: Final = 1000
# Mosquitto's requests are smaller so the time budget is overrun by less.
MOSQUITTO_BATCH: Final = 250
QUIET: Final = {"ALATAU_LIVE__ENABLED": "false", "ALATAU_ALERTS__ENABLED": "false"}


@dataclass(frozen=True)
class Sizes:
    """How much each measurement moves: readings, devices, seconds."""

    single: int = 50_000
    batched: int = 100_000
    memory_devices: int = 2_000
    city_fleet: int = CITY_FLEET
    mosquitto_budget_s: float = 60.0


@dataclass
class Edge:
    """One edge under test: its settings, how to read its broker's memory, and its bare
    consumer's command line."""

    name: str
    settings: Settings
    broker_rss_mib: Callable[[], float]
    bare_args: list[str]
    api_port: int | None = None

    @property
    def mosquitto(self) -> bool:
        return self.settings.edge.broker == "mosquitto"


async def bare_drain(edge: Edge, readings: int) -> tuple[float, float]:
    """A backlog published into the edge and drained by a bare consumer: (consume rate,
    publish rate), each from its first message to its last."""
    if edge.mosquitto:
        Process("bench.subscriber", *edge.bare_args, "--prepare").output()
    seconds = await publish_all(edge.settings, Scenario(readings).messages())
    bare = Process("bench.subscriber", *edge.bare_args, "--count", str(readings))
    result = json.loads(await asyncio.to_thread(bare.output))
    if result["received"] < readings:
        raise RuntimeError(f"{edge.name}: the bare consumer got {result['received']} of {readings}")
    return result["received"] / (result["last"] - result["first"]), readings / seconds


async def commission(
    api_url: str,
    headers: dict[str, str],
    fleet: list[SimDevice],
    batch: int,
    budget_s: float | None,
) -> tuple[dict[str, MqttLogin], list[tuple[int, float]], list[str]]:
    """Register ``fleet`` through ``POST /devices/bulk``, ``batch`` a request, until done or
    ``budget_s`` has passed or the api refuses: each device's login, (devices, seconds) after
    each request, and the refusal if one ended it."""
    logins: dict[str, MqttLogin] = {}
    marks: list[tuple[int, float]] = []
    refused: list[str] = []
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=900) as client:
        for first in range(0, len(fleet), batch):
            if budget_s is not None and time.perf_counter() - started >= budget_s:
                break
            body = [
                {
                    "device_id": device.device_id,
                    "kind": device.kind.value,
                    "district": device.district.value,
                    "location": {"lat": device.lat, "lon": device.lon},
                }
                for device in fleet[first : first + batch]
            ]
            response = await client.post("/api/v1/devices/bulk", json=body)
            if response.status_code != httpx.codes.CREATED:
                # The edge gave up (Mosquitto's store answering too slowly is a 503): that
                # is where commissioning stops, and the figure says so.
                refused.append(f"HTTP {response.status_code} {response.text[:200]}")
                break
            for created in response.json()["created"]:
                logins[created["device_id"]] = MqttLogin.model_validate(created["mqtt"])
            marks.append((len(logins), time.perf_counter() - started))
    return logins, marks, refused


def quadratic_extrapolation(marks: list[tuple[int, float]], devices: int) -> float:
    """Seconds for ``devices`` under t = a * n^2 fitted (least squares) to the marks."""
    a = sum(t * n**2 for n, t in marks) / sum(n**4 for n, _ in marks)
    return a * devices**2


async def memory_per_device(
    edge: Edge, fleet: list[SimDevice], logins: dict[str, MqttLogin]
) -> dict[str, float]:
    """Connect the devices (with ``logins``, or as the simulator's service; each with its Last
    Will and a retained ``online``) and take the broker's resident memory before and after:
    KiB per connected device."""

    def sample() -> float:
        values = []
        for _ in range(3):
            values.append(edge.broker_rss_mib())
            time.sleep(0.5)
        return median(values)

    await asyncio.sleep(2)
    before = await asyncio.to_thread(sample)
    simulation = Simulation(edge.settings, fleet, rate_hz=0.01, logins=logins)
    running = asyncio.create_task(simulation.run())
    started = time.perf_counter()
    try:
        while simulation.stats.connected < len(fleet):
            if running.done():
                running.result()
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"{simulation.stats.connected} of {len(fleet)} connected")
            await asyncio.sleep(0.2)
        connect_s = time.perf_counter() - started
        await asyncio.sleep(3)
        after = await asyncio.to_thread(sample)
    finally:
        simulation.stop()
        await running
    return {
        "devices": len(fleet),
        "connect_s": connect_s,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "kib_per_device": (after - before) * 1024 / len(fleet),
        "errors": simulation.stats.errors,
    }


@asynccontextmanager
async def serving_api(edge: Edge) -> AsyncIterator[str]:
    """The edge's api (the registry; on the city edge also the broker's login checks), its
    live feeds and alerts off so it spends nothing on the readings; its URL."""
    api, port = start_api(edge.settings, edge.api_port, **QUIET)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await wait_healthy(client, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        api.stop()


async def ingest_figures(edge: Edge, pool: asyncpg.Pool, sizes: Sizes) -> dict[str, Any]:
    """Ceiling, drain rates and latency of one edge."""
    single, batched = sizes.single, sizes.batched
    figures: dict[str, Any] = {}
    name = edge.name
    step(f"{name}: bare consumer draining {single:,} single-reading messages")
    figures["bare"], figures["publish"] = await bare_drain(edge, single)
    step(f"{name}: ingest x1 draining {single:,} single-reading messages")
    figures["ingest_single"], peak_rss = await ingest_drain(
        edge.settings, pool, 1, Scenario(single)
    )
    step(f"{name}: ingest x1 draining {batched:,} readings in arrays of 100")
    figures["ingest_batched"], peak_batched = await ingest_drain(
        edge.settings, pool, 1, Scenario(batched, per_message=100)
    )
    figures["ingest_peak_rss_mib"] = max(peak_rss, peak_batched)
    half = min(figures["ingest_single"], figures["publish"]) / 2
    step(f"{name}: publish -> stored at {half:,.0f} readings/s for 10 s")
    latencies = await latency_to_stored(edge.settings, pool, half, 10)
    figures["latency_rate"] = half
    figures["latency_p50_ms"] = percentile(latencies, 50) * 1000
    figures["latency_p99_ms"] = percentile(latencies, 99) * 1000
    figures["latency_samples"] = len(latencies)
    return figures


async def fleet_figures(edge: Edge, admin: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    """Broker memory with ``memory_devices`` connected, first, on a broker that has done
    nothing yet (after a backlog or a big dynamic-security store, Mosquitto reuses freed heap
    and its RSS hides what connections cost); they log in as the simulator's service, which
    costs the broker what a device's login does. Then commissioning (Mosquitto: for a minute;
    the city edge: 100,000 devices)."""
    prefix = "mq" if edge.mosquitto else "city"
    fleet = build_fleet(-(-sizes.city_fleet // 3), seed=7, prefix=prefix)[: sizes.city_fleet]
    count = sizes.memory_devices
    step(f"{edge.name}: broker memory with {count:,} devices connected")
    memory = await memory_per_device(edge, fleet[:count], {})
    budget = sizes.mosquitto_budget_s if edge.mosquitto else None
    batch = MOSQUITTO_BATCH if edge.mosquitto else BULK_BATCH
    async with serving_api(edge) as api_url:
        what = f"for {budget:.0f} s" if budget else f"{len(fleet):,} devices"
        step(f"{edge.name}: commissioning {what} through the api's bulk route")
        _, marks, refused = await commission(api_url, admin, fleet, batch, budget)
    devices, seconds = marks[-1]
    extrapolated = (
        quadratic_extrapolation(marks, CITY_FLEET)
        if edge.mosquitto
        else seconds * CITY_FLEET / devices
    )
    commissioned = {
        "devices": devices,
        "seconds": seconds,
        "rate": devices / seconds,
        "marks": marks,
        "extrapolated_100k_s": extrapolated,
        "refused": refused,
    }
    return {"commission": commissioned, "memory": memory}


async def run(sizes: Sizes) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with private_services() as services:
        settings = services.settings()
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
        try:
            await register_bench_devices(pool)
            admin = await asyncio.to_thread(services.headers, Role.ADMIN)
            step("ceiling of arrays: bare COPY into traffic_readings")
            figures["copy"] = await bare_copy(pool, 200_000)
            mosquitto = Edge(
                    "Mosquitto",
                    settings,
                    lambda: rss_mib(services.broker.pid()),
                    ["--lib", "gmqtt-bulk", "--url", login_url(settings, "ingest"),
                     "--client-id", "bare-edges", "--share-group", "bare-edges"],
                )  # fmt: skip
            figures["mosquitto"] = await fleet_figures(mosquitto, admin, sizes)
            figures["mosquitto"] |= await ingest_figures(mosquitto, pool, sizes)
            with private_edge() as city:
                cluster = Edge(
                        "RabbitMQ cluster",
                        city.settings(settings.database_url),
                        city.rss_mib,
                        ["--lib", "amqp", "--url", city.cluster.amqp_url("ingest"),
                         "--queue", INGEST_QUEUE],
                        api_port=city.api_port,
                    )  # fmt: skip
                figures["cluster"] = await fleet_figures(cluster, admin, sizes)
                # With 100,000 devices registered, as a city's ingest runs.
                figures["cluster"] |= await ingest_figures(cluster, pool, sizes)
        finally:
            await pool.close()
    return figures


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def _per_edge(figures: dict[str, Any], show: Callable[[dict[str, Any]], str]) -> list[str]:
    return [show(figures["mosquitto"]), show(figures["cluster"])]


def report(figures: dict[str, Any]) -> list[list[str]]:
    """The side-by-side table: measure, Mosquitto, RabbitMQ cluster, cluster / Mosquitto."""
    copy = figures["copy"]

    def ratio(key: str) -> str:
        return f"{figures['cluster'][key] / figures['mosquitto'][key]:.2f}"

    def row(name: str, show: Callable[[dict[str, Any]], str], key: str | None) -> list[str]:
        return [name, *_per_edge(figures, show), ratio(key) if key else ""]

    def commissioned(edge: dict[str, Any]) -> str:
        done = edge["commission"]
        ended = "; then refused (503)" if done.get("refused") else ""
        return f"{done['devices']:,} in {done['seconds']:.1f} s ({done['rate']:,.0f}/s){ended}"

    return [
        row("publish a backlog, 2 QoS 1 publishers", lambda e: f"{e['publish']:,.0f}/s", "publish"),
        row(
            "bare consumer of ingest's queue, single readings (ceiling)",
            lambda e: f"{e['bare']:,.0f}/s",
            "bare",
        ),
        row(
            "ingest x1, single readings (of the bare consumer)",
            lambda e: f"{e['ingest_single']:,.0f}/s ({e['ingest_single'] / e['bare']:.2f})",
            "ingest_single",
        ),
        row(
            f"ingest x1, arrays of 100 (of bare COPY, {copy:,.0f} rows/s)",
            lambda e: f"{e['ingest_batched']:,.0f}/s ({e['ingest_batched'] / copy:.2f})",
            "ingest_batched",
        ),
        row(
            "publish -> stored p50 / p99 at half the edge's peak",
            lambda e: (
                f"{e['latency_p50_ms']:,.0f} / {e['latency_p99_ms']:,.0f} ms"
                f" at {e['latency_rate']:,.0f}/s"
            ),
            None,
        ),
        row(
            "broker RSS per connected device",
            lambda e: (
                f"{e['memory']['kib_per_device']:,.1f} KiB"
                f" ({e['memory']['devices']:,} devices, {e['memory']['rss_before_mib']:,.0f}"
                f" -> {e['memory']['rss_after_mib']:,.0f} MiB)"
            ),
            None,
        ),
        row("those devices connected in", lambda e: f"{e['memory']['connect_s']:.1f} s", None),
        row("commissioning through POST /devices/bulk", commissioned, None),
        row(
            f"{CITY_FLEET:,} devices commissioned in",
            lambda e: (
                ("measured " if e["commission"]["devices"] >= CITY_FLEET else "about ")
                + _duration(e["commission"]["extrapolated_100k_s"])
            ),
            None,
        ),
        row("peak RSS of ingest", lambda e: f"{e['ingest_peak_rss_mib']:,.0f} MiB", None),
    ]


def write_results(figures: dict[str, Any], meta: dict[str, Any]) -> None:
    rows = report(figures)
    header = ["measure", "Mosquitto", "RabbitMQ cluster", "cluster / Mosquitto"]
    table = Table(title="Alatau edges: Mosquitto vs the RabbitMQ cluster")
    for column in header:
        table.add_column(column)
    for line in rows:
        table.add_row(*line)
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edges.json").write_text(json.dumps({**meta, "figures": figures}, indent=2) + "\n")
    markdown = [
        f"Run {meta['date']} on {meta['machine']} ({meta['seconds']} s).",
        "",
        f"| {' | '.join(header)} |",
        "|---|---|---|---|",
        *(f"| {' | '.join(line)} |" for line in rows),
    ]
    (RESULTS / "edges.md").write_text("\n".join(markdown) + "\n")
    console.log(f"written {RESULTS / 'edges.json'} and edges.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--single", type=int, default=Sizes.single, help="single-reading backlog")
    parser.add_argument("--batched", type=int, default=Sizes.batched, help="in arrays of 100")
    parser.add_argument("--memory-devices", type=int, default=Sizes.memory_devices)
    parser.add_argument(
        "--render", action="store_true", help="only print and write the saved results again"
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "edges.json").read_text())
        write_results(saved.pop("figures"), saved)
        return
    started = time.perf_counter()
    sizes = (
        Sizes(5_000, 10_000, 200, city_fleet=5_000, mosquitto_budget_s=5)
        if args.quick
        else Sizes(args.single, args.batched, args.memory_devices)
    )
    figures = uvloop.run(run(sizes))
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "sizes": asdict(sizes),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_results(figures, meta)


if __name__ == "__main__":
    main()
