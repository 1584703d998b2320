"""The simulated fleet: which devices exist, in which district, and where they stand."""

from __future__ import annotations

from typing import Final

from devices.contract import District, Kind, is_valid_device_id
from simulators.randomness import normal, stable_key
from simulators.schemas import SimDevice

# Centre of each district and the spread (standard deviation, degrees) of its sensors. Alatau
# lies around 43.85 N 77.05 E; the four districts span about 30 km, with green on the
# Kapchagay reservoir shore to the north-east and growing along the highway to the south-west.
DISTRICT_CENTRES: Final[dict[District, tuple[float, float]]] = {
    District.GATE: (43.845, 77.035),
    District.GOLDEN: (43.800, 77.095),
    District.GROWING: (43.780, 76.935),
    District.GREEN: (43.925, 77.170),
}
_SPREAD_LAT: Final = 0.018  # about 2 km
_SPREAD_LON: Final = 0.025  # about 2 km at this latitude
_DISTRICTS: Final = tuple(District)


def device_id(prefix: str, district: District, kind: Kind, number: int) -> str:
    """``{prefix}-{district}-{kind}-{number:04d}``: readable, sortable, stable across runs."""
    return f"{prefix}-{district.value}-{kind.value}-{number:04d}"


def build_fleet(devices_per_kind: int, seed: int, prefix: str = "sim") -> list[SimDevice]:
    """``devices_per_kind`` devices of every kind, dealt to the districts round-robin, with ids
    and coordinates that depend only on the arguments."""
    if devices_per_kind < 0:
        raise ValueError("devices_per_kind must be >= 0")
    longest = device_id(prefix, District.GROWING, Kind.TRAFFIC, max(devices_per_kind, 1))
    if not is_valid_device_id(longest):
        raise ValueError(f"prefix {prefix!r} does not make valid device ids (e.g. {longest!r})")
    key = stable_key(seed, "fleet", prefix)
    fleet: list[SimDevice] = []
    for kind in Kind:
        for index in range(devices_per_kind):
            district = _DISTRICTS[index % len(_DISTRICTS)]
            lat, lon = DISTRICT_CENTRES[district]
            identity = device_id(prefix, district, kind, index + 1)
            where = stable_key(key, identity)
            fleet.append(
                SimDevice(
                    device_id=identity,
                    kind=kind,
                    district=district,
                    lat=round(lat + _SPREAD_LAT * normal(where, 0), 6),
                    lon=round(lon + _SPREAD_LON * normal(where, 1), 6),
                )
            )
    return fleet
