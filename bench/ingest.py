"""``python -m bench.ingest``: only ingest's drain rates and their ceilings, several rounds.

The full pipeline bench takes each figure once; on a shared 2-core machine one figure moves by a
third from run to run. This takes the ingest figures (bare gmqtt subscriber, the same on
ingest's bulk-ack receive path, ingest x1 single readings, ingest x1 arrays of 100, bare COPY)
in interleaved rounds and prints each round and the medians, with the ratios taken within each
round. ``--profile DIR`` also records a py-spy profile (collapsed stacks) of the ingester
draining single readings (py-spy must be installed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from bench.harness import Process, ingest_env, median, private_services, publish_all
from bench.pipeline import (
    Scenario,
    bare_copy,
    bare_subscribers,
    register_bench_devices,
    step,
    wait_consuming,
    wait_stored,
)


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(__file__).parents[1] / ".venv/bin/py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [*command, "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def profiled_drain(
    services: Any, pool: asyncpg.Pool, scenario: Scenario, profile: Path | None
) -> float:
    """The drain of ``pipeline.ingest_drain`` (x1), with py-spy attached when asked."""
    settings = services.settings()
    group = f"ing{uuid.uuid4().hex[:6]}"
    env = ingest_env(settings, f"{group}-0", group)
    warm = Process("ingest", env=env)
    await wait_consuming(settings, pool)
    warm.stop()
    await publish_all(settings, scenario.messages())
    ingester = Process("ingest", env=env)
    spy = (
        start_py_spy(ingester.popen.pid, profile / f"ingest-{scenario.readings}.txt")
        if profile
        else None
    )
    try:
        return await wait_stored(pool, scenario)
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes what it sampled
            spy.wait(30)
        ingester.stop()


async def run(rounds: int, single: int, batched: int, profile: Path | None) -> dict[str, Any]:
    table: list[dict[str, float]] = []
    with private_services() as services:
        settings = services.settings()
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
        try:
            await register_bench_devices(pool)
            for n in range(rounds):
                step(f"round {n + 1} of {rounds}")
                figures = {
                    "copy": await bare_copy(pool, 200_000),
                    "gmqtt_x1": await bare_subscribers(settings, "gmqtt", 1, single),
                    "gmqtt_bulk_x1": await bare_subscribers(settings, "gmqtt-bulk", 1, single),
                    "ingest_single_x1": await profiled_drain(
                        services, pool, Scenario(single), profile if n == 0 else None
                    ),
                    "ingest_batched_x1": await profiled_drain(
                        services, pool, Scenario(batched, per_message=100), None
                    ),
                }
                figures["single_ratio"] = figures["ingest_single_x1"] / figures["gmqtt_x1"]
                figures["single_ratio_bulk"] = (
                    figures["ingest_single_x1"] / figures["gmqtt_bulk_x1"]
                )
                figures["batched_ratio"] = figures["ingest_batched_x1"] / figures["copy"]
                print(json.dumps({k: round(v, 2) for k, v in figures.items()}), flush=True)
                table.append(figures)
        finally:
            await pool.close()
    return {key: median([row[key] for row in table]) for key in table[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=100_000)
    parser.add_argument("--batched", type=int, default=200_000)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    medians = uvloop.run(run(args.rounds, args.single, args.batched, args.profile))
    print("medians", json.dumps({k: round(v, 2) for k, v in medians.items()}), flush=True)


if __name__ == "__main__":
    main()
