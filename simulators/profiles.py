"""The city's rhythms: local time, daily and weekly curves, seasons and the shared weather.

Every curve is a plain function of local Almaty time so the kinds agree with each other: air
quality follows the same rush hours that traffic counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from simulators.randomness import smooth, stable_key

ALMATY: Final = ZoneInfo("Asia/Almaty")
HEATING_MONTHS: Final = frozenset({11, 12, 1, 2, 3})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_DAYS_PER_YEAR: Final = 365.25


@dataclass(frozen=True, slots=True)
class Moment:
    """One instant seen from the city: UTC milliseconds plus the local calendar."""

    ts_ms: int
    hour: float  # local time of day in hours, 0 <= hour < 24
    weekend: bool
    month: int
    day_of_year: int
    day: float  # local days since the epoch, fractional: the axis of slow drifts

    @classmethod
    def of(cls, ts: datetime) -> Moment:
        local = ts.astimezone(ALMATY)
        hour = local.hour + local.minute / 60 + local.second / 3600
        ts_ms = (ts - _EPOCH) // _ONE_MS
        offset = local.utcoffset() or timedelta(0)
        return cls(
            ts_ms=ts_ms,
            hour=hour,
            weekend=local.weekday() >= 5,
            month=local.month,
            day_of_year=local.timetuple().tm_yday,
            day=(ts_ms + offset // _ONE_MS) / 86_400_000,
        )

    @property
    def heating_season(self) -> bool:
        return self.month in HEATING_MONTHS

    @property
    def season(self) -> float:
        """-1 in mid-January (coldest), +1 in mid-July (warmest)."""
        return -math.cos(2 * math.pi * (self.day_of_year - 15) / _DAYS_PER_YEAR)


def bell(hour: float, centre: float, width: float) -> float:
    """A bump around ``centre`` on the 24-hour clock (wraps past midnight)."""
    distance = abs(hour - centre) % 24
    distance = min(distance, 24 - distance)
    return math.exp(-0.5 * (distance / width) ** 2)


def window(hour: float, opens: float, closes: float, softness: float = 0.5) -> float:
    """About 1 between ``opens`` and ``closes``, about 0 outside, with soft edges."""
    return _sigmoid((hour - opens) / softness) * _sigmoid((closes - hour) / softness)


def _sigmoid(value: float) -> float:
    if value < -40:
        return 0.0
    return 1.0 / (1.0 + math.exp(-value))


def traffic_profile(hour: float, weekend: bool) -> float:
    """Relative traffic flow, about 1 at the weekday peaks (8:30 and 18:30 local)."""
    if weekend:
        return 0.05 + 0.38 * window(hour, 9.0, 22.0, 0.8) + 0.12 * bell(hour, 13.5, 2.5)
    return (
        0.05
        + 0.42 * window(hour, 6.5, 21.5, 0.7)
        + 0.55 * bell(hour, 8.5, 0.9)
        + 0.52 * bell(hour, 18.5, 1.1)
    )


@dataclass(frozen=True, slots=True)
class Weather:
    """The city-wide weather of one moment; sensors add their own small offsets."""

    temperature_c: float
    daily_mean_c: float
    humidity_pct: float
    pressure_hpa: float
    stagnation: float  # 0.5 (windy, well mixed) .. 1.5 (calm, inversion): scales pollution


class WeatherModel:
    """Seasonal climate of the Ili valley with smooth day-to-day weather, shared by all sensors
    of a run (keyed by the seed only)."""

    def __init__(self, seed: int) -> None:
        self._keys = [stable_key(seed, "weather", name) for name in range(6)]

    def at(self, moment: Moment) -> Weather:
        season = moment.season
        keys = self._keys
        # Kapchagay: January about -7 C, July about +25 C.
        daily_mean = (
            9.0
            + 16.0 * season
            + 4.0 * smooth(keys[0], moment.day / 1.5)
            + 2.0 * smooth(keys[1], moment.day / 6.0)
        )
        amplitude = 5.0 + 2.0 * season
        diurnal = amplitude * math.cos(2 * math.pi * (moment.hour - 15.0) / 24)
        humidity = 62.0 - 20.0 * season - 2.0 * diurnal + 10.0 * smooth(keys[2], moment.day)
        # Station pressure at about 500 m: higher under the winter Siberian high.
        pressure = 958.0 - 7.0 * season + 6.0 * smooth(keys[3], moment.day / 2.0)
        stagnation = 1.0 + 0.5 * smooth(keys[4], moment.day / 1.5)
        return Weather(
            temperature_c=daily_mean + diurnal,
            daily_mean_c=daily_mean,
            humidity_pct=min(100.0, max(8.0, humidity)),
            pressure_hpa=pressure,
            stagnation=stagnation,
        )
