"""The MQTT reading contract: one definition of each metric, its unit and its physical range.

Firmware, ingest, the API and the simulators all read these definitions; nothing else in the code
base spells a metric's range again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final


class Kind(StrEnum):
    TRAFFIC = "traffic"
    ENERGY = "energy"
    AIR = "air"


class District(StrEnum):
    GATE = "gate"
    GOLDEN = "golden"
    GROWING = "growing"
    GREEN = "green"


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric of one kind: its JSON name, type, unit and physical range (inclusive)."""

    name: str
    unit: str
    description: str
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None

    @property
    def sql_type(self) -> str:
        return "integer" if self.integer else "double precision"

    def range_text(self) -> str:
        low = "-inf" if self.minimum is None else f"{self.minimum:g}"
        high = "inf" if self.maximum is None else f"{self.maximum:g}"
        return f"[{low}, {high}]"


_AIR_POLLUTANT_MAX: Final = 5000.0

METRICS: Final[dict[Kind, tuple[Metric, ...]]] = {
    Kind.TRAFFIC: (
        Metric(
            "vehicle_count",
            "vehicles",
            "vehicles counted since the previous reading",
            integer=True,
            minimum=0,
            maximum=100_000,
        ),
        Metric("interval_s", "s", "length of the counting window", minimum=0, maximum=86_400),
        Metric("avg_speed_kmh", "km/h", "average speed over the window", minimum=0, maximum=250),
        Metric(
            "occupancy_pct", "%", "share of time the detector was occupied", minimum=0, maximum=100
        ),
        Metric(
            "heavy_vehicle_count",
            "vehicles",
            "heavy vehicles counted in the window",
            integer=True,
            minimum=0,
            maximum=100_000,
        ),
    ),
    Kind.ENERGY: (
        Metric(
            "energy_kwh",
            "kWh",
            "cumulative meter register (grows except on a meter reset)",
            minimum=0,
            maximum=1e12,
        ),
        Metric(
            "power_kw",
            "kW",
            "active power (negative when exporting)",
            minimum=-100_000,
            maximum=100_000,
        ),
        Metric("voltage_v", "V", "RMS voltage", minimum=0, maximum=1000),
        Metric("current_a", "A", "RMS current", minimum=0, maximum=100_000),
        Metric("power_factor", "", "power factor", minimum=-1, maximum=1),
    ),
    Kind.AIR: (
        Metric("pm2_5", "µg/m³", "fine particulate matter", minimum=0, maximum=_AIR_POLLUTANT_MAX),
        Metric("pm10", "µg/m³", "coarse particulate matter", minimum=0, maximum=_AIR_POLLUTANT_MAX),
        Metric("no2", "µg/m³", "nitrogen dioxide", minimum=0, maximum=_AIR_POLLUTANT_MAX),
        Metric("so2", "µg/m³", "sulphur dioxide", minimum=0, maximum=_AIR_POLLUTANT_MAX),
        Metric("o3", "µg/m³", "ozone", minimum=0, maximum=_AIR_POLLUTANT_MAX),
        Metric("co", "µg/m³", "carbon monoxide", minimum=0, maximum=_AIR_POLLUTANT_MAX),
        Metric("temperature_c", "°C", "air temperature", minimum=-60, maximum=60),
        Metric("humidity_pct", "%", "relative humidity", minimum=0, maximum=100),
        Metric("pressure_hpa", "hPa", "air pressure", minimum=800, maximum=1100),
    ),
}

METRICS_BY_NAME: Final[dict[Kind, dict[str, Metric]]] = {
    kind: {metric.name: metric for metric in metrics} for kind, metrics in METRICS.items()
}

DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
_DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
TOPIC_ROOT: Final = "alatau"
MAX_BATCH_READINGS: Final = 1000
FUTURE_TOLERANCE: Final = timedelta(minutes=5)


def is_valid_device_id(device_id: str) -> bool:
    return _DEVICE_ID_RE.fullmatch(device_id) is not None


def telemetry_topic(kind: Kind, device_id: str) -> str:
    return f"{TOPIC_ROOT}/{kind.value}/{device_id}/telemetry"


def status_topic(kind: Kind, device_id: str) -> str:
    return f"{TOPIC_ROOT}/{kind.value}/{device_id}/status"


def errors_topic(kind: Kind, device_id: str) -> str:
    """Where ingest tells a device why its readings were refused; only that device may read it."""
    return f"{TOPIC_ROOT}/{kind.value}/{device_id}/errors"


ERRORS_LEAF: Final = "errors"
# Where Mosquitto's refusals plugin (stack/mosquitto_refusals.c) reports each publish or
# subscription it refuses; outside alatau/, so the live feeds' "alatau/#" never sees it (not a "$"
# topic: Mosquitto 2.0 delivers those to no shared subscription).
REFUSALS_TOPIC: Final = "alatau-broker/refused"


def metric_names(kind: Kind) -> tuple[str, ...]:
    return tuple(metric.name for metric in METRICS[kind])


def readings_table(kind: Kind) -> str:
    """Name of the raw hypertable of a kind; the only place the mapping is spelled."""
    return f"{kind.value}_readings"


def latest_table(kind: Kind) -> str:
    """Name of a kind's newest-reading-per-device table (same columns as raw, one row a device)."""
    return f"{kind.value}_latest"


def contract_document() -> dict[str, Any]:
    """The contract as data, served by the API so apps and firmware can read it."""
    return {
        kind.value: {
            metric.name: {
                "unit": metric.unit,
                "description": metric.description,
                "type": "integer" if metric.integer else "number",
                "minimum": metric.minimum,
                "maximum": metric.maximum,
            }
            for metric in metrics
        }
        for kind, metrics in METRICS.items()
    }


def utc_now() -> datetime:
    return datetime.now(UTC)
