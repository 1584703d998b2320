"""The US EPA Air Quality Index (Technical Assistance Document, May 2024 PM2.5 breakpoints).

Sub-index per pollutant on its own averaging window (PM2.5 and PM10 24 h, O3 and CO 8 h, NO2 and
SO2 1 h), the AQI is the highest sub-index and that pollutant is the dominant one. Devices report
µg/m³; gases are converted to ppb/ppm at 25 °C and 1 atm (ppb = µg/m³ x 24.45 / molar mass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

_MOLAR_VOLUME: Final = 24.45

_INDEX: Final = ((0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, 500))
CATEGORIES: Final = (
    (50, "good"),
    (100, "moderate"),
    (150, "unhealthy_for_sensitive_groups"),
    (200, "unhealthy"),
    (300, "very_unhealthy"),
    (500, "hazardous"),
)


@dataclass(frozen=True, slots=True)
class Pollutant:
    metric: str
    window: timedelta
    unit: str  # the unit of the breakpoints
    molar_mass: float | None  # None: the breakpoints are in µg/m³
    scale: float  # 1 for ppb, 1000 for ppm
    decimals: int  # EPA truncation of the concentration
    breakpoints: tuple[tuple[float, float], ...]

    def concentration(self, micrograms: float) -> float:
        """µg/m³ into the breakpoints' unit, truncated as the EPA prescribes."""
        value = micrograms
        if self.molar_mass is not None:
            value = micrograms * _MOLAR_VOLUME / self.molar_mass / self.scale
        factor: float = 10.0**self.decimals
        return math.floor(value * factor + 1e-9) / factor

    def sub_index(self, micrograms: float) -> int:
        value = self.concentration(micrograms)
        for (low, high), (i_low, i_high) in zip(self.breakpoints, _INDEX, strict=False):
            if value <= high:
                return round((i_high - i_low) / (high - low) * (max(value, low) - low) + i_low)
        return 500


POLLUTANTS: Final = (
    Pollutant(
        "pm2_5", timedelta(hours=24), "µg/m³", None, 1, 1,
        ((0.0, 9.0), (9.1, 35.4), (35.5, 55.4), (55.5, 125.4), (125.5, 225.4), (225.5, 325.4)),
    ),
    Pollutant(
        "pm10", timedelta(hours=24), "µg/m³", None, 1, 0,
        ((0, 54), (55, 154), (155, 254), (255, 354), (355, 424), (425, 604)),
    ),
    Pollutant(
        "o3", timedelta(hours=8), "ppb", 48.00, 1, 0,
        ((0, 54), (55, 70), (71, 85), (86, 105), (106, 200)),
    ),
    Pollutant(
        "co", timedelta(hours=8), "ppm", 28.01, 1000, 1,
        ((0.0, 4.4), (4.5, 9.4), (9.5, 12.4), (12.5, 15.4), (15.5, 30.4), (30.5, 50.4)),
    ),
    Pollutant(
        "no2", timedelta(hours=1), "ppb", 46.0055, 1, 0,
        ((0, 53), (54, 100), (101, 360), (361, 649), (650, 1249), (1250, 2049)),
    ),
    Pollutant(
        "so2", timedelta(hours=1), "ppb", 64.066, 1, 0,
        ((0, 35), (36, 75), (76, 185), (186, 304), (305, 604), (605, 1004)),
    ),
)  # fmt: skip


def category(aqi: int) -> str:
    for ceiling, name in CATEGORIES:
        if aqi <= ceiling:
            return name
    return CATEGORIES[-1][1]
