"""``python -m bench.city_fleet``: the simulated city's devices through the city edge with ingest
running, each device with its own login answered by the api.

On a private TimescaleDB and 3-node RabbitMQ cluster: the api (registry and the broker's login
checks) in ``--api-workers`` processes, ``--ingest`` replicas, then ``python -m simulators run``
with ``--devices`` devices over ``--processes`` workers, which registers them through the api
and connects each to its node, at most ``--connect-rate`` CONNECTs a second over all workers,
refused ones retried with backoff.
Every ``--every`` seconds it notes readings stored, connections the cluster counts, the ingest
queue's backlog, the brokers' and the api's memory, refusals and the simulator's errors; then
the steady-state rate over the last ``--seconds``. Writes bench/results/city_fleet.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop

from api.keys.schemas import Role
from bench.edges import QUIET
from bench.harness import (
    BenchEdge,
    BenchServices,
    Process,
    ingest_env,
    private_edge,
    private_services,
    process_env,
    rss_mib,
)
from bench.pipeline import RESULTS, console, start_api, step, wait_healthy
from core.config import Settings
from stack.rabbitmq_topology import INGEST_QUEUE

READINGS_SQL = (
    "SELECT (SELECT count(*) FROM traffic_readings) + (SELECT count(*) FROM energy_readings)"
    " + (SELECT count(*) FROM air_readings)"
)


def tree_rss_mib(pid: int | None) -> float:
    """Resident memory of a process and its children (the api's uvicorn workers)."""
    if pid is None:
        return 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return rss_mib(pid) + sum(tree_rss_mib(int(child)) for child in children)


def simulator_counts(log: Path) -> dict[str, int]:
    """The latest progress of each simulator worker, added up: devices connected by its own
    count, CONNECTs refused and failed (each retried)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    latest: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if "simulator progress" not in line:
            continue
        worker = re.search(r"worker=(\d+)", line)
        fields = dict(re.findall(r"(connected|connect_refusals|connect_failures)=(\d+)", line))
        latest[worker.group(1) if worker else "0"] = {k: int(v) for k, v in fields.items()}
    names = ("connected", "connect_refusals", "connect_failures")
    return {name: sum(w.get(name, 0) for w in latest.values()) for name in names}


async def _management(client: httpx.AsyncClient, path: str, default: Any) -> Any:
    try:
        response = await client.get(path)
        response.raise_for_status()
        return response.json()
    except httpx.HTTPError:
        return default


async def sample(
    edge: BenchEdge, pool: asyncpg.Pool, management: httpx.AsyncClient, api: Process
) -> dict[str, Any]:
    """One look at the whole city edge (the management API's figures are None when a loaded
    node does not answer in time)."""
    overview, queue, nodes = await asyncio.gather(
        _management(management, "/overview", {}),
        _management(management, f"/queues/%2F/{INGEST_QUEUE}", {}),
        _management(management, "/nodes?columns=name,fd_used", []),
    )
    return {
        "t": time.monotonic(),
        "stored": await pool.fetchval(READINGS_SQL),
        "rejections": await pool.fetchval("SELECT count(*) FROM ingest_rejections"),
        "connections": overview.get("object_totals", {}).get("connections"),
        "backlog": queue.get("messages"),
        "unacked": queue.get("messages_unacknowledged"),
        "broker_rss_mib": round(edge.rss_mib(), 1),
        "api_rss_mib": round(tree_rss_mib(api.popen.pid), 1),
        "fd_used": [node.get("fd_used") for node in nodes],
    }


def simulator_errors(log: Path) -> dict[str, int]:
    """What the simulator's log says went wrong: its error counts and warning lines."""
    text = log.read_text(errors="replace") if log.exists() else ""
    errors = [int(n) for n in re.findall(r"errors=(\d+)", text)]
    return {
        "errors_reported": max(errors, default=0),
        "warning_lines": len(re.findall(r"\[warning|\[error", text)),
    }


async def drive(
    args: argparse.Namespace, services: BenchServices, edge: BenchEdge, settings: Settings
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="alatau-fleet-"))
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    admin = await asyncio.to_thread(services.headers, Role.ADMIN)
    api, port = start_api(
        settings, edge.api_port, **QUIET, ALATAU_API__WORKERS=str(args.api_workers)
    )
    ingesters: list[Process] = []
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    connected_at = 0.0
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await wait_healthy(client, port)
        ingesters = [
            Process("ingest", env=ingest_env(settings, f"fleet-ingest-{n}"))
            for n in range(args.ingest)
        ]
        per_kind = -(-args.devices // 3)
        env = {
            **process_env(settings),
            "ALATAU_SIMULATOR__API_URL": f"http://127.0.0.1:{port}",
            "ALATAU_SIMULATOR_API_KEY": admin["Authorization"].removeprefix("Bearer "),
            "ALATAU_LOG_LEVEL": "INFO",
            "ALATAU_LOG_FORMAT": "console",
            "ALATAU_SIMULATOR__CONNECT_RATE_HZ": str(args.connect_rate / args.processes),
            "ALATAU_SIMULATOR__CONNECT_CONCURRENCY": str(
                max(1, args.connect_concurrency // args.processes)
            ),
        }
        step(f"simulator: {per_kind * 3:,} devices at {args.rate}/s, {args.processes} processes")
        simulator = Process(
            "simulators",
            "run",
            "--devices-per-kind",
            str(per_kind),
            "--rate",
            str(args.rate),
            "--processes",
            str(args.processes),
            "--log-every",
            str(args.every),
            env=env,
            log=folder / "simulator.log",
        )
        management = httpx.AsyncClient(
            base_url=f"{edge.cluster.management_url()}/api",
            auth=("service.admin", edge.cluster.passwords()["admin"]),
            timeout=30,
        )
        try:
            deadline = time.monotonic() + args.connect_timeout + args.seconds
            while time.monotonic() < deadline and simulator.popen.poll() is None:
                await asyncio.sleep(args.every)
                samples.append(await sample(edge, pool, management, api))
                samples[-1]["t"] -= started
                samples[-1]["simulator"] = simulator_counts(folder / "simulator.log")
                console.log(json.dumps(samples[-1]))
                if samples[-1]["simulator"]["connected"] >= per_kind * 3 and not connected_at:
                    connected_at = time.monotonic()
                    deadline = connected_at + args.seconds
        finally:
            simulator.stop()
            await management.aclose()
        problems = simulator_errors(folder / "simulator.log")
        tail = (folder / "simulator.log").read_text(errors="replace")[-4000:]
    finally:
        for process in ingesters:
            process.stop()
        api.stop()
        await pool.close()
    return {"samples": samples, "simulator": problems, "simulator_log_tail": tail}


def steady(samples: list[dict[str, Any]], devices: int) -> dict[str, Any]:
    """Rates over the samples taken with every device connected."""
    full = [s for s in samples if s["simulator"]["connected"] >= devices]
    if len(full) < 2:
        return {"connected_samples": len(full)}
    first, last = full[0], full[-1]
    span = last["t"] - first["t"]
    return {
        "connected_samples": len(full),
        "seconds": span,
        "stored_per_s": (last["stored"] - first["stored"]) / span,
        "backlog_max": max(s["backlog"] or 0 for s in full),
        "broker_rss_mib": last["broker_rss_mib"],
        "api_rss_mib": last["api_rss_mib"],
        "rejections": last["rejections"] - first["rejections"],
        "all_connected_at_s": first["t"],
        "connections": last["connections"],
        "fd_used": last["fd_used"],
        "connect_refusals": last["simulator"]["connect_refusals"],
        "connect_failures": last["simulator"]["connect_failures"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1.0, help="readings per device per second")
    parser.add_argument("--processes", type=int, default=2, help="simulator worker processes")
    parser.add_argument("--ingest", type=int, default=1, help="ingest replicas")
    parser.add_argument(
        "--api-workers",
        type=int,
        default=2,
        help="api processes answering the brokers' login checks (a deployment runs several)",
    )
    parser.add_argument(
        "--connect-rate", type=float, default=40.0, help="CONNECTs a second, all workers"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=40, help="CONNECTs awaiting a CONNACK"
    )
    parser.add_argument("--seconds", type=float, default=60, help="steady state, all connected")
    parser.add_argument("--connect-timeout", type=float, default=1800)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument(
        "--statistics-interval-ms",
        type=int,
        default=5000,
        help="the nodes' collect_statistics_interval (the management API's figures are this old)",
    )
    parser.add_argument(
        "--auth-cache-ttl-ms",
        type=int,
        default=120_000,
        help="how long a node keeps the api's allows (each expiry is a request per device)",
    )
    parser.add_argument(
        "--auth-cache-module",
        default="rabbit_auth_cache_ets",
        help="the nodes' auth cache (the segmented stateless one refused every login here)",
    )
    args = parser.parse_args()
    edge_context = private_edge(
        args.devices,
        statistics_interval_ms=args.statistics_interval_ms,
        auth_cache_ttl_ms=args.auth_cache_ttl_ms,
        auth_cache_module=args.auth_cache_module,
    )
    with private_services() as services, edge_context as edge:
        settings = edge.settings(services.postgres.url)
        result = uvloop.run(drive(args, services, edge, settings))
        # Written before the services stop: stopping thousands of connections takes a while.
        write_result(args, result)


def write_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    devices = -(-args.devices // 3) * 3
    summary = steady(result["samples"], devices)
    console.log(json.dumps(summary))
    RESULTS.mkdir(exist_ok=True)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "arguments": vars(args),
        "summary": summary,
        **result,
    }
    (RESULTS / "city_fleet.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
