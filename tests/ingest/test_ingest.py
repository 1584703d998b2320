"""Ingest on the real broker and database: what is stored, what is refused and why."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from core.config import Settings
from devices.contract import Kind, status_topic, telemetry_topic
from ingest.app import RunningIngest
from tests.support import eventually, publish, register


def recent(seconds_ago: int) -> str:
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
    return moment.isoformat()


async def rejections_of(pool: asyncpg.Pool, device_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT reason, detail, payload, topic, kind FROM ingest_rejections"
        " WHERE device_id = $1 ORDER BY reason",
        device_id,
    )


async def count_rows(pool: asyncpg.Pool, table: str, device_id: str) -> int:
    count: int = await pool.fetchval(
        f"SELECT count(*) FROM {table} WHERE device_id = $1", device_id
    )
    return count


async def test_a_mixed_batch_stores_the_good_and_keeps_each_bad_one_with_its_reason(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"air-{unique}"
    await register(db_pool, device, Kind.AIR)
    good = [
        {"ts": recent(30), "pm2_5": 35.5, "pm10": 60.0, "temperature_c": -4.5},
        {"ts": recent(20), "pm2_5": 36.0, "humidity_pct": 71.0},
    ]
    bad = [
        {"ts": recent(15), "pm2_5": 12.0, "smell": "smoky"},
        {"ts": recent(10), "pm2_5": "high"},
        {"ts": recent(5), "pm2_5": 5001.0},
    ]
    batch = [good[0], bad[0], good[1], bad[1], bad[2]]
    await publish(ingest_settings, [(telemetry_topic(Kind.AIR, device), orjson.dumps(batch))])

    rows = await eventually(lambda: rejections_of(db_pool, device), lambda found: len(found) == 3)
    assert [(r["reason"], orjson.loads(r["payload"])) for r in rows] == [
        ("out_of_range", bad[2]),
        ("unknown_field", bad[0]),
        ("wrong_type", bad[1]),
    ]
    assert all(r["topic"] == telemetry_topic(Kind.AIR, device) and r["kind"] == "air" for r in rows)
    assert "smell" in rows[1]["detail"]
    stored = await db_pool.fetch(
        "SELECT ts, pm2_5, pm10, temperature_c, humidity_pct FROM air_readings"
        " WHERE device_id = $1 ORDER BY ts",
        device,
    )
    assert [(r["ts"].isoformat(), r["pm2_5"]) for r in stored] == [
        (datetime.fromisoformat(str(g["ts"])).isoformat(), g["pm2_5"]) for g in good
    ]
    assert (stored[0]["pm10"], stored[0]["temperature_c"], stored[0]["humidity_pct"]) == (
        60.0,
        -4.5,
        None,
    )


async def test_a_redelivered_reading_is_stored_once(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"traffic-{unique}"
    await register(db_pool, device, Kind.TRAFFIC)
    reading = orjson.dumps({"ts": recent(3), "vehicle_count": 4, "interval_s": 60.0})
    duplicates_before = ingest.service.totals.duplicates
    topic = telemetry_topic(Kind.TRAFFIC, device)
    await publish(ingest_settings, [(topic, reading), (topic, reading)])
    await publish(ingest_settings, [(topic, reading)])

    await eventually(
        lambda: _dup_count(ingest, duplicates_before), lambda dup: dup >= 2, timeout_s=10
    )
    assert await count_rows(db_pool, "traffic_readings", device) == 1
    assert ingest.service.totals.duplicates - duplicates_before == 2


async def _dup_count(ingest: RunningIngest, before: int) -> int:
    return ingest.service.totals.duplicates - before


async def test_unregistered_disabled_and_mismatched_devices_are_refused(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    stranger, disabled, energy = f"who-{unique}", f"off-{unique}", f"meter-{unique}"
    await register(db_pool, disabled, Kind.AIR, enabled=False)
    await register(db_pool, energy, Kind.ENERGY)
    reading = orjson.dumps({"ts": recent(2), "pm2_5": 10.0})
    await publish(
        ingest_settings,
        [
            (telemetry_topic(Kind.AIR, stranger), reading),
            (telemetry_topic(Kind.AIR, disabled), reading),
            (telemetry_topic(Kind.AIR, energy), reading),
        ],
    )
    for device, reason in [
        (stranger, "unknown_device"),
        (disabled, "device_disabled"),
        (energy, "kind_mismatch"),
    ]:
        rows = await eventually(
            functools.partial(rejections_of, db_pool, device), lambda r: len(r) == 1
        )
        assert [r["reason"] for r in rows] == [reason]
        assert rows[0]["payload"] == reading
        assert await count_rows(db_pool, "air_readings", device) == 0


async def test_unusable_payloads_are_kept_with_their_raw_bytes(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"energy-{unique}"
    await register(db_pool, device, Kind.ENERGY)
    topic = telemetry_topic(Kind.ENERGY, device)
    payloads = [b"\xc3\x28 not utf-8", b'{"ts": ', b"[]"]
    await publish(ingest_settings, [(topic, p) for p in payloads])
    rows = await eventually(lambda: rejections_of(db_pool, device), lambda r: len(r) == 3)
    assert sorted((r["reason"], bytes(r["payload"])) for r in rows) == sorted(
        [("not_utf8", payloads[0]), ("invalid_json", payloads[1]), ("empty_batch", payloads[2])]
    )


async def test_status_topic_and_readings_update_the_device(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"status-{unique}"
    await register(db_pool, device, Kind.ENERGY)
    await publish(ingest_settings, [(status_topic(Kind.ENERGY, device), "online")])
    await publish(
        ingest_settings,
        [(telemetry_topic(Kind.ENERGY, device), orjson.dumps({"ts": recent(1), "power_kw": 3.2}))],
    )
    row = await eventually(
        lambda: db_pool.fetchrow(
            "SELECT status, last_seen FROM devices WHERE device_id = $1", device
        ),
        lambda r: r is not None and r["status"] == "online" and r["last_seen"] is not None,
    )
    assert row is not None
    assert row["status"] == "online"
    assert row["last_seen"] is not None
    await publish(ingest_settings, [(status_topic(Kind.ENERGY, device), "offline")])
    status = await eventually(
        lambda: db_pool.fetchval("SELECT status FROM devices WHERE device_id = $1", device),
        lambda s: s == "offline",
    )
    assert status == "offline"


async def test_retention_drops_old_rejection_chunks_and_keeps_recent_ones(
    ingest: RunningIngest, db_pool: asyncpg.Pool, unique: str
) -> None:
    device = f"old-{unique}"
    now = datetime.now(UTC)
    await db_pool.executemany(
        "INSERT INTO ingest_rejections (received_at, topic, device_id, reason, detail, payload)"
        " VALUES ($1, 't', $2, 'invalid_json', 'd', '\\x00')",
        [(now - timedelta(days=45), device), (now - timedelta(minutes=1), device)],
    )
    dropped = await ingest.service.apply_retention()
    assert dropped is not None
    assert dropped >= 1
    remaining = await db_pool.fetch(
        "SELECT received_at FROM ingest_rejections WHERE device_id = $1", device
    )
    assert [r["received_at"] > now - timedelta(days=1) for r in remaining] == [True]


async def test_a_storm_of_last_wills_is_written_in_batches_and_acknowledged(
    ingest: RunningIngest, ingest_settings: Settings, db_pool: asyncpg.Pool, unique: str
) -> None:
    devices = [f"will{n}-{unique}" for n in range(300)]
    for device in devices:
        await register(db_pool, device, Kind.TRAFFIC)
    await publish(ingest_settings, [(status_topic(Kind.TRAFFIC, d), "offline") for d in devices])
    offline = await eventually(
        lambda: db_pool.fetchval(
            "SELECT count(*) FROM devices WHERE device_id = ANY($1::text[]) AND status = 'offline'",
            devices,
        ),
        lambda n: n == len(devices),
    )
    assert offline == len(devices)
