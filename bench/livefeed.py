"""``python -m bench.livefeed``: the city's live stream for the aggregates benchmark, at a steady
rate of readings per second over MQTT (QoS 1), until SIGTERM; then prints what it published.

Each device sends every ``--period-s`` seconds a JSON array of its readings since the last one
(one reading a second per device at most), stamped with the wall clock, so ingest stores the
newest minutes and the rollup worker has them dirty while the benchmark's clients read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uvloop

from bench.aggdata import fleet
from core.config import Settings
from core.mqtt import connect, make_client, publish_when_possible
from devices.contract import Kind, telemetry_topic


def register_kwh(n: int, at: datetime) -> float:
    """The energy register of fleet device ``n`` at ``at``, as bench/aggdata.py generates it."""
    seed, x = (n * 0.618034) % 1, at.timestamp() / 3600
    power = 20 + 180 * seed
    return (
        10000 * seed
        + 10
        + power * (x - 482_136.0 - 0.45 * 12 / math.pi * math.cos(2 * math.pi * (x - 3) / 24))
    )


def reading(kind: Kind, n: int, at: datetime, rng: random.Random) -> dict[str, Any]:
    r = rng.random
    if kind is Kind.TRAFFIC:
        count = int(r() * 20)
        return {
            "ts": at.isoformat(),
            "vehicle_count": count,
            "interval_s": 1.0,
            "avg_speed_kmh": 30 + r() * 30,
            "occupancy_pct": r() * 40,
            "heavy_vehicle_count": count // 10,
        }
    if kind is Kind.ENERGY:
        return {
            "ts": at.isoformat(),
            "energy_kwh": register_kwh(n, at),
            "power_kw": 20 + r() * 150,
            "voltage_v": 228 + r() * 4,
            "current_a": 50 + r() * 100,
            "power_factor": 0.9 + r() * 0.08,
        }
    return {
        "ts": at.isoformat(),
        "pm2_5": 10 + r() * 40,
        "pm10": 20 + r() * 60,
        "no2": 10 + r() * 40,
        "so2": 3 + r() * 10,
        "o3": 20 + r() * 50,
        "co": 300 + r() * 800,
        "temperature_c": -5 + r() * 10,
        "humidity_pct": 50 + r() * 30,
        "pressure_hpa": 915 + r() * 5,
    }


async def feed(settings: Settings, devices: int, rate: float, stop: asyncio.Event) -> int:
    """Publish ``rate`` readings a second over ``devices`` devices until ``stop``."""
    endpoint = settings.mqtt_as(settings.simulator)
    client = make_client(endpoint, f"bench-feed-{uuid.uuid4().hex[:8]}")
    await connect(client, endpoint)
    rng = random.Random(7)
    fleet_list = fleet(devices)
    per_device = min(1.0, rate / devices)  # readings a second per device
    period_s = max(1.0, 10 * devices / rate) if per_device < 1 else 1.0
    readings_per_message = max(1, round(per_device * period_s))
    step = timedelta(seconds=period_s / readings_per_message)
    published, started = 0, time.monotonic()
    try:
        while not stop.is_set():
            for offset in range(0, devices, max(1, devices // 100)):
                # A slice of the fleet every 1/100 of a period keeps the stream even.
                now = datetime.now(UTC)
                for n in range(offset, min(devices, offset + max(1, devices // 100))):
                    device = fleet_list[n]
                    batch = [
                        reading(device.kind, n, now - k * step, rng)
                        for k in range(readings_per_message)
                    ]
                    topic = telemetry_topic(device.kind, device.device_id)
                    await publish_when_possible(client, topic, orjson.dumps(batch))
                    published += len(batch)
                # Hold the rate: sleep until this many readings are due.
                due = started + published / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if stop.is_set():
                    break
    finally:
        await client.disconnect()
    return published


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = Settings()
    started = time.monotonic()
    published = await feed(settings, args.devices, args.rate, stop)
    elapsed = time.monotonic() - started
    print(json.dumps({"published": published, "seconds": round(elapsed, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--rate", type=float, default=10_000)
    uvloop.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
