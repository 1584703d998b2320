"""The value models: every reading valid against the contract, and the city's rhythms visible."""

from __future__ import annotations

import csv
import gzip
import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from statistics import mean
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.contract import District, Kind
from devices.schemas import READING_MODELS
from simulators.fleet import build_fleet
from simulators.models import DeviceStream, format_ts
from simulators.profiles import ALMATY
from simulators.schemas import SimDevice
from tests.support import needs_recording, shared_data_dir

SEED = 42
STEP_S = 300.0
WEEK = 7 * 24 * 3600 // int(STEP_S)
FLEET = build_fleet(4, seed=SEED)
# Monday 00:00 in Almaty, in winter and in summer.
WINTER_MONDAY = datetime(2026, 1, 12, tzinfo=ALMATY)
SUMMER_MONDAY = datetime(2026, 7, 13, tzinfo=ALMATY)


def week_of(device: SimDevice, start: datetime, step_s: float = STEP_S) -> list[dict[str, Any]]:
    return DeviceStream(device, seed=SEED, start=start, step_s=step_s).take(
        int(7 * 86_400 / step_s)
    )


def devices(kind: Kind) -> list[SimDevice]:
    return [device for device in FLEET if device.kind is kind]


def local(reading: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(reading["ts"]).astimezone(ALMATY)


@pytest.mark.parametrize("start", [WINTER_MONDAY, SUMMER_MONDAY], ids=["winter", "summer"])
@pytest.mark.parametrize("kind", list(Kind))
def test_a_week_of_readings_validates_against_the_contract(kind: Kind, start: datetime) -> None:
    model = READING_MODELS[kind]
    for device in devices(kind):
        readings = week_of(device, start)
        assert len(readings) == WEEK
        for reading in readings:
            published = orjson.loads(orjson.dumps(reading))
            assert published == reading
            model.model_validate(published)
            assert list(published) == ["ts", *model.metric_fields()]
        assert len({reading["ts"] for reading in readings}) == WEEK


def test_counts_are_integers_and_heavy_vehicles_a_part_of_them() -> None:
    for device in devices(Kind.TRAFFIC):
        for reading in week_of(device, WINTER_MONDAY):
            assert type(reading["vehicle_count"]) is int
            assert type(reading["heavy_vehicle_count"]) is int
            assert 0 <= reading["heavy_vehicle_count"] <= reading["vehicle_count"]
            assert reading["interval_s"] == STEP_S


def test_timestamps_are_rfc3339_with_milliseconds_and_offset() -> None:
    stream = DeviceStream(
        FLEET[0], seed=SEED, start=datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC), step_s=0.5
    )
    first, second = stream.take(2)
    assert first["ts"] == "2026-11-21T10:00:00.123+00:00"
    assert second["ts"] == "2026-11-21T10:00:00.623+00:00"
    assert format_ts(datetime(2026, 1, 1, 5, tzinfo=ALMATY)) == "2026-01-01T00:00:00.000+00:00"


def test_the_energy_register_never_decreases_and_integrates_power() -> None:
    for device in devices(Kind.ENERGY):
        readings = week_of(device, WINTER_MONDAY)
        registers = [reading["energy_kwh"] for reading in readings]
        assert all(b >= a for a, b in itertools.pairwise(registers))
        integrated = sum(reading["power_kw"] * STEP_S / 3600 for reading in readings[1:])
        assert registers[-1] - registers[0] == pytest.approx(integrated, rel=1e-3)
        for reading in readings:
            assert 0.9 <= reading["power_factor"] <= 0.99
            assert 215 <= reading["voltage_v"] <= 245


def test_traffic_peaks_in_the_morning_and_evening_rush_hours() -> None:
    by_hour: dict[int, list[float]] = defaultdict(list)
    weekday: list[float] = []
    weekend: list[float] = []
    for device in devices(Kind.TRAFFIC):
        for reading in week_of(device, WINTER_MONDAY):
            moment = local(reading)
            flow = reading["vehicle_count"] / reading["interval_s"] * 3600
            if moment.weekday() < 5:
                by_hour[moment.hour].append(flow)
                weekday.append(flow)
            else:
                weekend.append(flow)
    hourly = {hour: mean(values) for hour, values in by_hour.items()}
    morning = max(range(5, 13), key=hourly.__getitem__)
    evening = max(range(14, 23), key=hourly.__getitem__)
    assert morning in {7, 8, 9}
    assert evening in {17, 18, 19}
    assert hourly[morning] > 1.5 * hourly[13]
    assert hourly[evening] > 1.5 * hourly[13]
    assert hourly[3] < 0.2 * hourly[morning]
    assert mean(weekend) < mean(weekday)


def test_speed_falls_as_occupancy_rises() -> None:
    for device in devices(Kind.TRAFFIC):
        readings = week_of(device, WINTER_MONDAY)
        busy = [r["avg_speed_kmh"] for r in readings if r["occupancy_pct"] > 30]
        quiet = [r["avg_speed_kmh"] for r in readings if r["occupancy_pct"] < 5]
        assert busy
        assert quiet
        assert mean(busy) < 0.6 * mean(quiet)


def test_heavy_vehicles_are_a_larger_share_in_the_industrial_district() -> None:
    def share(device: SimDevice) -> float:
        readings = week_of(device, WINTER_MONDAY)
        heavy: int = sum(r["heavy_vehicle_count"] for r in readings)
        total: int = sum(r["vehicle_count"] for r in readings)
        return heavy / total

    shares = {device.district: share(device) for device in devices(Kind.TRAFFIC)}
    assert shares[District.GROWING] > 2 * max(
        share for district, share in shares.items() if district is not District.GROWING
    )


def test_winter_air_is_much_dirtier_than_summer_air_and_worst_at_night() -> None:
    winter = [r for d in devices(Kind.AIR) for r in week_of(d, WINTER_MONDAY)]
    summer = [r for d in devices(Kind.AIR) for r in week_of(d, SUMMER_MONDAY)]
    assert mean(r["pm2_5"] for r in winter) > 3 * mean(r["pm2_5"] for r in summer)
    assert mean(r["pm10"] for r in winter) > mean(r["pm10"] for r in summer)
    night = [r["pm2_5"] for r in winter if local(r).hour in {22, 23, 0, 1}]
    afternoon = [r["pm2_5"] for r in winter if local(r).hour in {13, 14, 15}]
    assert mean(night) > 1.5 * mean(afternoon)
    assert mean(r["temperature_c"] for r in winter) < -2
    assert mean(r["temperature_c"] for r in summer) > 18
    assert mean(r["o3"] for r in summer) > mean(r["o3"] for r in winter)


def test_no2_follows_the_traffic_hours() -> None:
    readings = [r for d in devices(Kind.AIR) for r in week_of(d, SUMMER_MONDAY)]
    weekday = [r for r in readings if local(r).weekday() < 5]
    rush = [r["no2"] for r in weekday if local(r).hour in {8, 18}]
    night = [r["no2"] for r in weekday if local(r).hour in {2, 3, 4}]
    assert mean(rush) > 2 * mean(night)


def test_the_same_seed_gives_the_same_readings() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for device in FLEET:
        first = DeviceStream(device, seed=7, start=start, step_s=60).take(100)
        again = DeviceStream(device, seed=7, start=start, step_s=60).take(100)
        other = DeviceStream(device, seed=8, start=start, step_s=60).take(100)
        assert first == again
        assert first != other


@pytest.mark.parametrize("kind", [Kind.TRAFFIC, Kind.AIR])
def test_a_stateless_reading_depends_only_on_seed_device_and_timestamp(kind: Kind) -> None:
    device = devices(kind)[0]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    late = DeviceStream(device, seed=SEED, start=start, step_s=60).take(30)
    early = DeviceStream(device, seed=SEED, start=start - timedelta(hours=1), step_s=60).take(90)
    assert early[60:] == late


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    start=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    step_s=st.floats(min_value=0.001, max_value=86_400),
    index=st.integers(min_value=0, max_value=len(FLEET) - 1),
)
def test_any_seed_start_and_step_gives_valid_readings(
    seed: int, start: datetime, step_s: float, index: int
) -> None:
    device = FLEET[index]
    stream = DeviceStream(device, seed=seed, start=start, step_s=step_s)
    for reading in stream.take(5):
        READING_MODELS[device.kind].model_validate(orjson.loads(orjson.dumps(reading)))


DATA = shared_data_dir()
PM25_DAILY = DATA / "airdatakz_almaty_pm25_daily.csv.gz"
WINTER_MONTHS, SUMMER_MONTHS = {12, 1, 2}, {6, 7, 8}
RATIO_TOLERANCE = 0.15  # relative


def real_winter_summer_ratio() -> float:
    """Dec-Feb over Jun-Aug mean of Almaty's measured daily city-wide PM2.5."""
    winter: list[float] = []
    summer: list[float] = []
    with gzip.open(PM25_DAILY, "rt", newline="") as file:
        for row in csv.DictReader(file):
            month = int(row["date"][5:7])
            if month in WINTER_MONTHS:
                winter.append(float(row["value_ugm3"]))
            elif month in SUMMER_MONTHS:
                summer.append(float(row["value_ugm3"]))
    return mean(winter) / mean(summer)


@needs_recording(PM25_DAILY)
def test_winter_pm25_exceeds_summer_pm25_about_as_much_as_in_almaty() -> None:
    real = real_winter_summer_ratio()
    assert 3 < real < 7  # the file is what we think it is

    def season_mean(start: datetime, days: int) -> float:
        return mean(
            float(reading["pm2_5"])
            for device in devices(Kind.AIR)
            for reading in DeviceStream(device, seed=SEED, start=start, step_s=3600).take(days * 24)
        )

    winter = season_mean(datetime(2025, 12, 1, tzinfo=ALMATY), 90)
    summer = season_mean(datetime(2026, 6, 1, tzinfo=ALMATY), 92)
    assert winter / summer == pytest.approx(real, rel=RATIO_TOLERANCE)


def test_the_register_goes_down_only_on_a_meter_reset() -> None:
    for device in devices(Kind.ENERGY):
        stream = DeviceStream(
            device, seed=SEED, start=WINTER_MONDAY, step_s=STEP_S, meter_reset_rate=0.01
        )
        readings = stream.take(WEEK)
        resets = {
            format_ts(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
            for ms in stream.meter_resets
        }
        assert resets  # 1 % of 2,016 readings
        for previous, reading in itertools.pairwise(readings):
            if reading["ts"] in resets:  # starts again from zero: this interval's energy only
                assert reading["energy_kwh"] == pytest.approx(
                    reading["power_kw"] * STEP_S / 3600, abs=2e-3
                )
                assert reading["energy_kwh"] < previous["energy_kwh"] or previous["ts"] in resets
            else:
                assert reading["energy_kwh"] >= previous["energy_kwh"]


def test_without_resets_no_meter_reset_is_drawn() -> None:
    for device in devices(Kind.ENERGY):
        stream = DeviceStream(device, seed=SEED, start=WINTER_MONDAY, step_s=STEP_S)
        stream.take(WEEK)
        assert stream.meter_resets == []
