"""Faulty firmware against the real broker and the real ingest: every injected fault shows up
at ingest exactly as counted (rejections by reason, duplicates, stored rows, Last Wills)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from core.config import Settings
from devices.contract import Kind, metric_names, readings_table, telemetry_topic
from ingest.app import RunningIngest
from simulators.faults import MESSAGE_FAULTS, READING_FAULTS, FaultMode, FaultPlan
from simulators.faults import expected_rejections as rejections_for
from simulators.fleet import build_fleet
from simulators.schemas import SimDevice
from simulators.service import Simulation
from tests.simulators.collector import Collector
from tests.support import eventually, publish, register

pytestmark = pytest.mark.e2e

READINGS_PER_DEVICE = 60
FAULTS = FaultPlan(
    rates={
        **dict.fromkeys(READING_FAULTS, 0.04),
        **dict.fromkeys(MESSAGE_FAULTS, 0.07),
        FaultMode.METER_RESET: 0.08,
    },
    gap_messages=3,
    burst_messages=3,
    late_messages=5,
    dropout_s=0.2,
)


async def rejections(pool: asyncpg.Pool, device_ids: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT reason, count(*) AS n FROM ingest_rejections"
        " WHERE device_id = ANY($1::text[]) GROUP BY reason",
        device_ids,
    )
    return {row["reason"]: row["n"] for row in rows}


async def stored(pool: asyncpg.Pool, fleet: list[SimDevice]) -> dict[str, list[dict[str, Any]]]:
    """Every stored reading per device, in ts order, shaped as published (no NULL metrics)."""
    readings: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for kind in Kind:
        ids = [device.device_id for device in fleet if device.kind is kind]
        columns = ", ".join(metric_names(kind))
        for row in await pool.fetch(
            f"SELECT device_id, ts, {columns} FROM {readings_table(kind)}"
            " WHERE device_id = ANY($1::text[]) ORDER BY device_id, ts",
            ids,
        ):
            values = {k: v for k, v in dict(row).items() if v is not None and k != "device_id"}
            readings[row["device_id"]].append(values)
    return dict(readings)


def total(readings: dict[str, list[dict[str, Any]]]) -> int:
    return sum(len(items) for items in readings.values())


@pytest.mark.parametrize("batch_size", [1, 3])
async def test_ingest_sees_exactly_the_injected_faults(
    ingest: RunningIngest,
    ingest_settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
    batch_size: int,
) -> None:
    prefix = f"ft{unique}"
    fleet = build_fleet(2, seed=21, prefix=prefix)
    device_ids = [device.device_id for device in fleet]
    for device in fleet:
        await register(db_pool, device.device_id, device.kind, device.district)
    settings = ingest_settings.model_copy(
        update={
            "simulator": ingest_settings.simulator.model_copy(
                update={"client_id_prefix": f"ft-{unique}"}
            )
        }
    )
    # A reading sent after the simulation's: once ingest has stored it, it has had all of them.
    sentinel = f"ft-sentinel-{unique}"
    await register(db_pool, sentinel, Kind.AIR)
    duplicates_before = ingest.service.totals.duplicates
    received_before = ingest.service.totals.received
    simulation = Simulation(
        settings,
        fleet,
        rate_hz=40.0,
        count=READINGS_PER_DEVICE,
        seed=21,
        batch_size=batch_size,
        start=datetime.now(UTC) - timedelta(hours=2),
        time_step_s=60.0,
        record=True,
        faults=FAULTS,
    )
    async with Collector(settings, prefix, ("alatau/+/+/status",)) as statuses:
        stats = await simulation.run()
        await statuses.settle()  # every status, the last offline included, has arrived
    counts = stats.faults
    for mode in FaultMode:
        assert counts.injected[mode.value] > 0, mode  # the seed exercises every mode
    assert stats.errors == 0
    assert stats.readings_sent == len(fleet) * READINGS_PER_DEVICE

    expected_rejections = rejections_for(counts)
    expected_rows = len(simulation.published)
    await eventually(
        lambda: rejections(db_pool, device_ids),
        lambda found: sum(found.values()) >= sum(expected_rejections.values()),
    )
    rows = await eventually(
        lambda: stored(db_pool, fleet), lambda found: total(found) >= expected_rows
    )
    await eventually(
        lambda: asyncio.sleep(0, ingest.service.totals.duplicates - duplicates_before),
        lambda n: n >= counts.duplicate_readings,
    )
    # Each reading ingest receives ends as one row, duplicate or rejection: with the sentinel
    # stored, the outcomes must add up to exactly what was sent, or something extra came.
    sent = expected_rows + counts.duplicate_readings + sum(expected_rejections.values())
    last = {"ts": datetime.now(UTC).isoformat(), "pm2_5": 1.0}
    await publish(settings, [(telemetry_topic(Kind.AIR, sentinel), orjson.dumps(last))])

    async def settled() -> tuple[int, int]:
        stored: int = await db_pool.fetchval(
            "SELECT count(*) FROM air_readings WHERE device_id = $1", sentinel
        )
        return stored, ingest.service.totals.received - received_before

    assert await eventually(settled, lambda s: s[0] == 1 and s[1] >= sent + 1) == (1, sent + 1)

    assert await rejections(db_pool, device_ids) == expected_rejections
    assert ingest.service.totals.duplicates - duplicates_before == counts.duplicate_readings > 0
    # Stored: every good reading once, value for value, late and out-of-order ones included.
    published: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, device_id, reading in simulation.published:
        published[device_id].append({**reading, "ts": datetime.fromisoformat(reading["ts"])})
    rows = await stored(db_pool, fleet)
    assert total(rows) == expected_rows
    assert rows == {d: sorted(r, key=lambda x: x["ts"]) for d, r in published.items()}
    # Every faulty reading was sent as recorded, and none of them was stored.
    faulty_readings = sum(
        counts.injected[m.value]
        for m in READING_FAULTS
        if m not in (FaultMode.OUT_OF_ORDER, FaultMode.LATE)
    )
    assert len(simulation.faulty) >= faulty_readings
    # The register never goes down except across a meter reset.
    resets: dict[str, list[datetime]] = defaultdict(list)
    for _, device_id, mode, reading in simulation.faulty:
        if mode is FaultMode.METER_RESET:
            resets[device_id].append(datetime.fromisoformat(reading["ts"]))
    falls = 0
    for device_id, readings in rows.items():
        for before, after in itertools.pairwise(readings):
            if after.get("energy_kwh", 0) < before.get("energy_kwh", 0):
                falls += 1
                assert any(before["ts"] < t <= after["ts"] for t in resets[device_id])
    assert 0 < falls <= counts.injected[FaultMode.METER_RESET.value]
    # Each dropout made the broker publish the device's Last Will; the device came back online.
    offline: Counter[str] = Counter(
        device for device, said in statuses.statuses().items() for s in said if s == "offline"
    )
    assert sum(offline.values()) == counts.injected[FaultMode.DROPOUT.value] + len(fleet)
    final = await eventually(
        lambda: db_pool.fetch(
            "SELECT status FROM devices WHERE device_id = ANY($1::text[])", device_ids
        ),
        lambda found: {row["status"] for row in found} == {"offline"},
    )
    assert {row["status"] for row in final} == {"offline"}
