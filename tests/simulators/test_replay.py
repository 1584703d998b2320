"""Replaying real recordings: parsing, the time shift, and the NAB occupancy file stored row for
row by the real ingest."""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from core.config import Settings
from devices.contract import Kind
from ingest.app import RunningIngest, running_ingest
from simulators.__main__ import app
from simulators.replay import RecordingError, Replay, device_id_for, load_recording
from stack.broker_auth import login_environment
from tests.simulators.collector import Collector
from tests.support import eventually, needs_recording, register, shared_data_dir

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_data_dir()
NAB = DATA / "nab_mndot_occupancy_6005.csv"
PM10 = DATA / "airdatakz_almaty_pm10_hourly.csv.gz"
NAB_ROWS = 2380


def nab_rows() -> list[tuple[datetime, float]]:
    with NAB.open(newline="") as file:
        return [
            (datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC), float(row["value"]))
            for row in csv.DictReader(file)
        ]


@needs_recording(NAB)
def test_the_nab_file_is_one_device_in_time_order() -> None:
    recording = load_recording(NAB, kind=Kind.TRAFFIC, metric="occupancy_pct", prefix="nab")
    assert [device.device_id for device in recording.devices] == ["nab"]
    rows = recording.readings["nab"]
    assert len(rows) == NAB_ROWS
    assert [(r.ts, r.value) for r in rows] == sorted(nab_rows())
    gaps = [(b.ts - a.ts) for a, b in itertools.pairwise(rows)]
    assert max(gaps) > timedelta(days=3)  # the known multi-day gap is kept


@needs_recording(PM10)
def test_the_air_file_gives_one_device_per_station_with_offsets_honoured() -> None:
    recording = load_recording(PM10, kind=Kind.AIR, metric="pm10", prefix="aq")
    ids = {device.device_id for device in recording.devices}
    assert len(ids) == 20
    assert "aq-waqi_nan" in ids  # a station without an id upstream is still one station
    assert recording.rows == 371_061
    assert all(device.lat > 43 for device in recording.devices)  # the stations' own places
    for rows in recording.readings.values():
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(rows))
    # "-08:00" and "-07:00" rows: the offset is honoured, not dropped.
    first = recording.readings["aq-kgmt_25"][0]
    assert first.ts == datetime(2021, 12, 2, 19, 0, tzinfo=UTC)
    values = [r.value for rows in recording.readings.values() for r in rows]
    numbers = [v for v in values if isinstance(v, float)]
    assert len(numbers) == len(values)
    assert max(numbers) < 5000  # peaks near 900: within the contract, all stored
    tail = load_recording(PM10, kind=Kind.AIR, metric="pm10", prefix="aq", last=timedelta(days=30))
    assert tail.last_ts == recording.last_ts
    assert tail.last_ts - tail.first_ts <= timedelta(days=30)


def test_the_shift_ends_the_recording_at_the_end_of_the_replay(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 01:00:00,2.5\n")
    recording = load_recording(path, kind=Kind.AIR, metric="pm2_5", prefix="r")
    end = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    replay = Replay(settings, recording, speed=0, end=end)
    first, last = recording.readings["r"]
    assert replay.shifted(first) == {"ts": "2026-11-21T11:00:00.000+00:00", "pm2_5": 1.0}
    assert replay.shifted(last) == {"ts": "2026-11-21T12:00:00.000+00:00", "pm2_5": 2.5}
    assert Replay(settings, recording, speed=60).duration_s == 60


def test_values_that_are_no_number_stay_as_recorded(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("timestamp,value\n2020-01-01T00:00:00+06:00,n/a\n2020-01-01T01:00:00+06:00,7\n")
    recording = load_recording(path, kind=Kind.TRAFFIC, metric="vehicle_count", prefix="c")
    assert [r.value for r in recording.readings["c"]] == ["n/a", 7]


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("when,value\n2020-01-01,1\n", {}, "timestamp column"),
        ("timestamp,value\nyesterday,1\n", {}, "bad timestamp"),
        ("timestamp,value\n", {}, "no rows"),
        ("timestamp,value\n2020-01-01,1\n", {"metric": "smell"}, "no metric"),
    ],
)
def test_a_recording_that_cannot_be_replayed_is_refused(
    tmp_path: Path, content: str, options: dict[str, str], message: str
) -> None:
    path = tmp_path / "rec.csv"
    path.write_text(content)
    with pytest.raises(RecordingError, match=message):
        load_recording(path, kind=Kind.AIR, metric=options.get("metric", "pm10"), prefix="x")


def test_station_ids_become_valid_device_ids() -> None:
    assert device_id_for("aq", "waqi_-410893") == "aq-waqi_-410893"
    assert device_id_for("aq", "PCP #2") == "aq-PCP__2"
    with pytest.raises(RecordingError):
        device_id_for("x" * 60, "station")


@pytest.fixture
async def wide_window_ingest(ingest_settings: Settings) -> AsyncIterator[RunningIngest]:
    """An ingest replica of its own that accepts readings up to 30 days old: the NAB file spans
    16 days and the default late window is 7."""
    token = uuid.uuid4().hex[:8]
    wide = ingest_settings.ingest.model_copy(
        update={
            "client_id": f"test-replay-ingest-{token}",
            "share_group": f"replay-{token}",
            "late_window_s": 30 * 86_400,
        }
    )
    async with running_ingest(ingest_settings.model_copy(update={"ingest": wide})) as running:
        await running.consumer.connected.wait()
        yield running


@needs_recording(NAB)
async def test_replaying_the_nab_file_stores_exactly_its_rows(
    wide_window_ingest: RunningIngest,
    ingest_settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
) -> None:
    device_id = f"nab-{unique}"
    recording = load_recording(NAB, kind=Kind.TRAFFIC, metric="occupancy_pct", prefix=device_id)
    await register(db_pool, device_id, Kind.TRAFFIC)
    settings = ingest_settings.model_copy(
        update={
            "simulator": ingest_settings.simulator.model_copy(
                update={"client_id_prefix": f"replay-{unique}"}
            )
        }
    )
    replay = Replay(settings, recording, speed=0, record=True)
    stats = await replay.run()
    assert stats.readings_sent == NAB_ROWS
    assert stats.errors == 0

    async def count() -> int:
        found: int = await db_pool.fetchval(
            "SELECT count(*) FROM traffic_readings WHERE device_id = $1", device_id
        )
        return found

    assert await eventually(count, lambda n: n >= NAB_ROWS, timeout_s=30) == NAB_ROWS
    stored = await db_pool.fetch(
        "SELECT ts, occupancy_pct, vehicle_count, avg_speed_kmh FROM traffic_readings"
        " WHERE device_id = $1 ORDER BY ts",
        device_id,
    )
    shift = replay.shift()
    assert [(row["ts"], row["occupancy_pct"]) for row in stored] == [
        (ts + shift, value) for ts, value in sorted(nab_rows())
    ]
    assert all(row["vehicle_count"] is None and row["avg_speed_kmh"] is None for row in stored)
    newest = stored[-1]["ts"]
    assert abs((newest - datetime.now(UTC)).total_seconds()) < 60  # the recording ends now


async def test_values_outside_the_contract_are_refused_by_ingest_not_dropped(
    ingest: RunningIngest,
    ingest_settings: Settings,
    db_pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "air.csv"
    path.write_text(
        "datetime_utc,station_id,value_ugm3\n"
        "2026-01-01 00:00:00-08:00,s1,909.03\n"
        "2026-01-01 01:00:00-08:00,s1,5200\n"
        "2026-01-01 02:00:00-08:00,s1,n/a\n"
        "2026-01-01 03:00:00-08:00,s1,0\n"
    )
    recording = load_recording(path, kind=Kind.AIR, metric="pm10", prefix=f"rp{unique}")
    (device,) = recording.devices
    await register(db_pool, device.device_id, Kind.AIR)
    settings = ingest_settings.model_copy(
        update={
            "simulator": ingest_settings.simulator.model_copy(
                update={"client_id_prefix": f"replay-{unique}"}
            )
        }
    )
    stats = await Replay(settings, recording, speed=0).run()
    assert stats.readings_sent == 4

    async def outcome() -> tuple[list[float], list[str]]:
        values = await db_pool.fetch(
            "SELECT pm10 FROM air_readings WHERE device_id = $1 ORDER BY ts", device.device_id
        )
        reasons = await db_pool.fetch(
            "SELECT reason FROM ingest_rejections WHERE device_id = $1 ORDER BY reason",
            device.device_id,
        )
        return [r["pm10"] for r in values], [r["reason"] for r in reasons]

    found = await eventually(outcome, lambda o: len(o[0]) + len(o[1]) >= 4)
    assert found == ([909.03, 0.0], ["out_of_range", "wrong_type"])


def test_the_replay_command_refuses_a_metric_of_another_kind(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("timestamp,value\n2020-01-01,1\n")
    runner = CliRunner()
    result = runner.invoke(
        app, ["replay", str(path), "--kind", "traffic", "--metric", "pm10", "--no-register"]
    )
    assert result.exit_code == 2
    assert "no metric" in result.output


async def test_the_replay_command_publishes_the_recording_and_exits(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    path = tmp_path / "air.csv.gz"
    with gzip.open(path, "wt") as file:
        file.write("datetime_utc,station_id,value_ugm3\n")
        for hour in range(3):
            for station in ("a", "b"):
                file.write(f"2026-01-01 0{hour}:00:00-08:00,{station},{10 * hour + 1}\n")
    prefix = f"rc{unique}"
    env = {
        **os.environ,
        "MQTT_URL": settings.mqtt_url,
        **login_environment(settings),
        "ALATAU_LOG_FORMAT": "json",
        "ALATAU_SIMULATOR__CLIENT_ID_PREFIX": f"test-replay-{unique}",
    }
    async with Collector(settings, prefix, ("alatau/+/+/telemetry",)) as collector:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "simulators", "replay", str(path), "--kind", "air", "--metric", "pm10"),
            *("--prefix", prefix, "--speed", "0", "--no-register"),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        await collector.wait_for_readings(6)
        await collector.settle()
    received = collector.telemetry()
    assert {d: [r["pm10"] for r in rs] for d, rs in received.items()} == {
        f"{prefix}-a": [1.0, 11.0, 21.0],
        f"{prefix}-b": [1.0, 11.0, 21.0],
    }
    last = datetime.fromisoformat(received[f"{prefix}-a"][-1]["ts"])
    assert abs((last - datetime.now(UTC)).total_seconds()) < 30
