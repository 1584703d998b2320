"""The fleet: every kind, districts dealt round-robin, stable ids and plausible places."""

from __future__ import annotations

from collections import Counter
from statistics import mean

import pytest

from devices.contract import District, Kind, is_valid_device_id
from devices.schemas import DeviceCreate
from simulators.fleet import DISTRICT_CENTRES, build_fleet
from simulators.workers import deal


def test_devices_of_every_kind_spread_round_robin_over_the_districts() -> None:
    fleet = build_fleet(70, seed=42)
    assert len(fleet) == 210
    assert Counter(device.kind for device in fleet) == dict.fromkeys(Kind, 70)
    for kind in Kind:
        districts = [device.district for device in fleet if device.kind is kind]
        assert districts[:4] == list(District)
        counts = Counter(districts)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_ids_are_stable_valid_and_unique() -> None:
    fleet = build_fleet(5, seed=1, prefix="sim")
    ids = [device.device_id for device in fleet]
    assert ids[:5] == [
        "sim-gate-traffic-0001",
        "sim-golden-traffic-0002",
        "sim-growing-traffic-0003",
        "sim-green-traffic-0004",
        "sim-gate-traffic-0005",
    ]
    assert len(set(ids)) == len(ids)
    assert all(is_valid_device_id(device_id) for device_id in ids)


def test_the_same_seed_places_devices_in_the_same_spots() -> None:
    assert build_fleet(8, seed=3) == build_fleet(8, seed=3)
    assert build_fleet(8, seed=3) != build_fleet(8, seed=4)


def test_devices_stand_around_alatau_with_green_by_the_reservoir() -> None:
    fleet = build_fleet(70, seed=42)
    for device in fleet:
        assert 43.6 < device.lat < 44.1
        assert 76.7 < device.lon < 77.4
    centre = {
        district: (
            mean(d.lat for d in fleet if d.district is district),
            mean(d.lon for d in fleet if d.district is district),
        )
        for district in District
    }
    for district, (lat, lon) in centre.items():
        expected_lat, expected_lon = DISTRICT_CENTRES[district]
        assert lat == pytest.approx(expected_lat, abs=0.01)
        assert lon == pytest.approx(expected_lon, abs=0.01)
    green_lat, green_lon = centre[District.GREEN]
    for district in (District.GATE, District.GOLDEN, District.GROWING):
        assert green_lat > centre[district][0]
        assert green_lon > centre[district][1]


def test_registration_bodies_are_valid_device_creates() -> None:
    for device in build_fleet(2, seed=1):
        body = device.registration()
        created = DeviceCreate.model_validate(body)
        assert created.metadata == {"simulated": True}
        assert created.location is not None
        assert (created.location.lat, created.location.lon) == (device.lat, device.lon)


def test_a_prefix_that_breaks_the_id_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        build_fleet(1, seed=1, prefix="bad/prefix")
    with pytest.raises(ValueError, match="prefix"):
        build_fleet(1, seed=1, prefix="x" * 60)


def test_dealing_the_fleet_to_workers_keeps_every_device_once_and_mixes_kinds() -> None:
    fleet = build_fleet(10, seed=1)
    shares = deal(fleet, 3)
    assert sorted(d.device_id for share in shares for d in share) == sorted(
        d.device_id for d in fleet
    )
    assert all({d.kind for d in share} == set(Kind) for share in shares)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
