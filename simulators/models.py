"""Per-kind value models and the per-device stream of readings.

A reading depends only on (seed, device, timestamp) plus the device's own state (the energy
register, the previous reading's time), so two runs with the same seed, start and step publish
the same readings.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from devices.contract import METRICS, District, Kind
from simulators.profiles import Moment, WeatherModel, bell, traffic_profile, window
from simulators.randomness import normal, poisson, smooth, stable_key, uniform
from simulators.schemas import MAX_TIME_STEP_S, MIN_TIME_STEP_S, SimDevice, truncate_to_ms

Values = dict[str, float | int]
FLOAT_DECIMALS: Final = 3

# Channels: one noise stream per quantity, so adding a metric never shifts another's values.
_CH_COUNT, _CH_HEAVY, _CH_OCC, _CH_SPEED, _CH_POWER, _CH_VOLT, _CH_PF = range(10, 17)
_CH_PM, _CH_PM10, _CH_NO2, _CH_SO2, _CH_O3, _CH_CO, _CH_TEMP, _CH_HUM, _CH_PRES = range(20, 29)
_CH_RESET = 30


def format_ts(ts: datetime) -> str:
    """RFC 3339 with millisecond precision and an explicit offset (UTC)."""
    return truncate_to_ms(ts).isoformat(timespec="milliseconds")


def _within_contract(kind: Kind, values: Values) -> Values:
    """Round floats and clip every value to its contract range: a model's tail never becomes a
    rejected reading."""
    clipped: Values = {}
    for metric in METRICS[kind]:
        value = values[metric.name]
        if metric.minimum is not None:
            value = max(value, metric.minimum)
        if metric.maximum is not None:
            value = min(value, metric.maximum)
        clipped[metric.name] = int(value) if metric.integer else round(float(value), FLOAT_DECIMALS)
    return clipped


class KindModel(ABC):
    """The value model of one device: deterministic noise keyed by (seed, device_id)."""

    kind: ClassVar[Kind]

    def __init__(self, device: SimDevice, seed: int) -> None:
        self.device = device
        self.key = stable_key(seed, device.device_id)
        self.size = 0.6 + 0.8 * uniform(self.key, 0)  # how big this road, feeder or site is

    def registry_metadata(self) -> dict[str, Any]:
        """What the registry should know of this device beyond its identity (none by default)."""
        return {}

    def noise(self, moment: Moment, channel: int) -> float:
        """Standard normal noise of this device at this moment, one stream per channel."""
        return normal(self.key, moment.ts_ms, channel)

    def values(self, moment: Moment, interval_s: float) -> Values:
        """All metrics of one reading covering the ``interval_s`` seconds before ``moment``."""
        return _within_contract(self.kind, self._values(moment, interval_s))

    @abstractmethod
    def _values(self, moment: Moment, interval_s: float) -> Values: ...


# capacity (vehicles/h at the peak), free-flow speed (km/h), heavy-vehicle share
_TRAFFIC: Final[dict[District, tuple[float, float, float]]] = {
    District.GATE: (1800.0, 60.0, 0.04),
    District.GOLDEN: (1300.0, 50.0, 0.05),
    District.GROWING: (1400.0, 70.0, 0.20),
    District.GREEN: (900.0, 60.0, 0.06),
}
_WEEKEND_TRAFFIC: Final[dict[District, float]] = {District.GREEN: 1.25}  # tourists


class TrafficModel(KindModel):
    """Counts with weekday rush hours, quieter weekends, and speed falling as occupancy rises."""

    kind = Kind.TRAFFIC

    @property
    def free_flow_kmh(self) -> float:
        """The road's speed with no traffic on it: its district's free-flow speed, varied per
        road. Registered as ``metadata.free_flow_kmh``, the reference of congestion."""
        _, free_speed, _ = _TRAFFIC[self.device.district]
        return round(free_speed * (0.85 + 0.3 * uniform(self.key, 1)), 1)

    def registry_metadata(self) -> dict[str, Any]:
        return {"free_flow_kmh": self.free_flow_kmh}

    def _values(self, moment: Moment, interval_s: float) -> Values:
        capacity, _, heavy_share = _TRAFFIC[self.device.district]
        profile = traffic_profile(moment.hour, moment.weekend)
        if moment.weekend:
            profile *= _WEEKEND_TRAFFIC.get(self.device.district, 1.0)
        drift = 1.0 + 0.1 * smooth(self.key, moment.day * 8)  # busier and quieter spells
        flow = capacity * self.size * profile * drift  # vehicles per hour
        expected = flow * interval_s / 3600
        vehicles = poisson(expected, self.key, moment.ts_ms, _CH_COUNT)
        # Logistics runs around the clock: the heavy share grows when cars are few.
        share = heavy_share * (1.0 + 0.8 * max(0.0, 1.0 - profile))
        heavy = min(vehicles, poisson(expected * share, self.key, moment.ts_ms, _CH_HEAVY))
        load = flow / (capacity * self.size)
        occupancy = 2.0 + 48.0 * load**2 * (1.0 + share) + 1.5 * self.noise(moment, _CH_OCC)
        congestion = min(1.0, max(0.0, occupancy) / 60.0)
        speed = (
            self.free_flow_kmh * (1.0 - 0.8 * congestion) * (1.0 + 0.04 * self.noise(moment, 13))
        )
        return {
            "vehicle_count": vehicles,
            "interval_s": interval_s,
            "avg_speed_kmh": max(3.0, speed),
            "occupancy_pct": occupancy,
            "heavy_vehicle_count": heavy,
        }


# typical load (kW) of a metered site of each district
_BASE_LOAD_KW: Final[dict[District, float]] = {
    District.GATE: 150.0,
    District.GOLDEN: 110.0,
    District.GROWING: 450.0,
    District.GREEN: 80.0,
}
_POWER_FACTOR: Final[dict[District, float]] = {
    District.GATE: 0.965,
    District.GOLDEN: 0.96,
    District.GROWING: 0.925,
    District.GREEN: 0.97,
}


def load_curve(district: District, hour: float, weekend: bool) -> float:
    """Relative load of a district's typical site over the day (about 1 at its busiest)."""
    if district is District.GATE:  # offices
        if weekend:
            return 0.40 + 0.10 * window(hour, 10, 18)
        return 0.35 + 0.65 * window(hour, 8, 19)
    if district is District.GOLDEN:  # hospitals run all night, schools by day
        if weekend:
            return 0.55 + 0.10 * window(hour, 9, 20)
        return 0.50 + 0.50 * window(hour, 7.5, 17.5)
    if district is District.GROWING:  # industry in shifts
        if weekend:
            return 0.65
        return 0.75 + 0.25 * window(hour, 7, 19)
    # green: hotels and restaurants, evenings and weekends
    curve = 0.35 + 0.30 * bell(hour, 9, 1.5) + 0.65 * bell(hour, 20.5, 2.0)
    return curve * (1.2 if weekend else 1.0)


class EnergyModel(KindModel):
    """A three-phase meter: load curve by district, more in winter, a register that only grows
    except when the meter is reset (replaced or cleared): then it starts again from zero."""

    kind = Kind.ENERGY

    def __init__(self, device: SimDevice, seed: int, reset_rate: float = 0.0) -> None:
        super().__init__(device, seed)
        self.register_kwh = 1_000.0 + 250_000.0 * uniform(self.key, 2)
        self.reset_rate = reset_rate
        self.reset_ms: list[int] = []  # ts (epoch ms) of each reading that follows a reset

    def _values(self, moment: Moment, interval_s: float) -> Values:
        if self.reset_rate > 0 and uniform(self.key, moment.ts_ms, _CH_RESET) < self.reset_rate:
            self.register_kwh = 0.0
            self.reset_ms.append(moment.ts_ms)
        district = self.device.district
        curve = load_curve(district, moment.hour, moment.weekend)
        cooling = max(0.0, moment.season) * bell(moment.hour, 15, 3)
        seasonal = 1.0 - 0.18 * moment.season + 0.10 * cooling
        drift = 1.0 + 0.05 * smooth(self.key, moment.day * 48)
        jitter = 1.0 + 0.01 * self.noise(moment, _CH_POWER)
        power_kw = max(0.0, _BASE_LOAD_KW[district] * self.size * curve * seasonal * drift * jitter)
        # The register integrates the power over the interval the reading closes.
        self.register_kwh += power_kw * interval_s / 3600
        voltage = 231.0 - 5.0 * (curve - 0.6) + 1.0 * self.noise(moment, _CH_VOLT)
        power_factor = _POWER_FACTOR[district] + 0.01 * smooth(self.key ^ _CH_PF, moment.day * 24)
        power_factor = min(0.99, max(0.90, power_factor))
        current_a = power_kw * 1000.0 / (3.0 * voltage * power_factor)  # per phase
        return {
            "energy_kwh": self.register_kwh,
            "power_kw": power_kw,
            "voltage_v": voltage,
            "current_a": current_a,
            "power_factor": power_factor,
        }


# how much of the city's pollution reaches a district's sensors
_AIR_FACTOR: Final[dict[District, float]] = {
    District.GATE: 1.1,
    District.GOLDEN: 1.0,
    District.GROWING: 1.35,
    District.GREEN: 0.7,
}


class AirModel(KindModel):
    """Winter smog from coal heating under night inversions, traffic NO2, summer ozone."""

    kind = Kind.AIR

    def __init__(self, device: SimDevice, seed: int) -> None:
        super().__init__(device, seed)
        self.weather = WeatherModel(seed)
        self.temperature_offset = 1.2 * (uniform(self.key, 3) - 0.5)
        self.humidity_offset = 6.0 * (uniform(self.key, 4) - 0.5)

    def _noisy(self, value: float, moment: Moment, channel: int, spread: float = 0.1) -> float:
        return value * math.exp(spread * self.noise(moment, channel))

    def _values(self, moment: Moment, interval_s: float) -> Values:
        weather = self.weather.at(moment)
        local = _AIR_FACTOR[self.device.district] * weather.stagnation
        traffic = traffic_profile(moment.hour, moment.weekend)
        heating = 0.0
        if moment.heating_season:
            cold = min(1.0, max(0.0, (5.0 - weather.daily_mean_c) / 15.0))
            heating = 0.5 + 0.5 * cold
        # Night inversions trap the smoke of coal stoves and the CHP plant.
        night = 0.5 + bell(moment.hour, 23.0, 3.5)
        industry = 1.0 if self.device.district is District.GROWING else 0.0
        # Calibrated so that Dec-Feb over Jun-Aug means come near Almaty's measured ratio
        # (about 4.8 in AirData.kz daily PM2.5, 2017-2026; see tests/simulators/test_models.py).
        pm2_5 = local * (8.5 + 14.0 * traffic + 72.0 * heating * night)
        summer_dust = 5.0 * (1.0 + moment.season)
        pm10 = pm2_5 * (1.9 - 0.5 * heating) + summer_dust * local
        no2 = local * (12.0 + 40.0 * traffic) * (1.0 + 0.3 * heating)
        so2 = weather.stagnation * (4.0 + 22.0 * heating * night + 12.0 * industry)
        sunshine = 30.0 + 40.0 * (1.0 + moment.season) / 2.0
        o3 = (20.0 + sunshine * bell(moment.hour, 15.0, 3.5)) * (1.0 - 0.25 * traffic)
        co = local * (250.0 + 500.0 * traffic + 1400.0 * heating * night)
        temperature = weather.temperature_c + self.temperature_offset
        humidity = weather.humidity_pct + self.humidity_offset
        return {
            "pm2_5": self._noisy(pm2_5, moment, _CH_PM),
            "pm10": self._noisy(pm10, moment, _CH_PM10),
            "no2": self._noisy(no2, moment, _CH_NO2),
            "so2": self._noisy(so2, moment, _CH_SO2),
            "o3": self._noisy(o3, moment, _CH_O3),
            "co": self._noisy(co, moment, _CH_CO),
            "temperature_c": temperature + 0.15 * self.noise(moment, _CH_TEMP),
            "humidity_pct": humidity + 0.8 * self.noise(moment, _CH_HUM),
            "pressure_hpa": weather.pressure_hpa + 0.1 * self.noise(moment, _CH_PRES),
        }


_MODELS: Final[dict[Kind, type[KindModel]]] = {
    Kind.TRAFFIC: TrafficModel,
    Kind.ENERGY: EnergyModel,
    Kind.AIR: AirModel,
}


def make_model(device: SimDevice, seed: int, meter_reset_rate: float = 0.0) -> KindModel:
    """The value model of the device's kind; ``meter_reset_rate`` (per reading) applies to
    energy meters only."""
    if device.kind is Kind.ENERGY:
        return EnergyModel(device, seed, reset_rate=meter_reset_rate)
    return _MODELS[device.kind](device, seed)


class DeviceStream:
    """The readings of one device, in order: ``start``, then one ``step_s`` later each time."""

    def __init__(
        self,
        device: SimDevice,
        *,
        seed: int,
        start: datetime,
        step_s: float,
        meter_reset_rate: float = 0.0,
    ) -> None:
        if not MIN_TIME_STEP_S <= step_s <= MAX_TIME_STEP_S:
            raise ValueError(f"step_s must be within [{MIN_TIME_STEP_S}, {MAX_TIME_STEP_S}] s")
        self.device = device
        self.model = make_model(device, seed, meter_reset_rate)
        self.start = truncate_to_ms(start)
        self.step_ms = round(step_s * 1000)
        self.index = 0
        self.previous_ts: datetime | None = None

    def next_reading(self) -> dict[str, Any]:
        """The next reading as published: ``ts`` first, then every metric of the kind."""
        ts = self.start + timedelta(milliseconds=self.index * self.step_ms)
        if self.previous_ts is None:
            interval_s = self.step_ms / 1000
        else:
            interval_s = (ts - self.previous_ts).total_seconds()
        values = self.model.values(Moment.of(ts), interval_s)
        self.index += 1
        self.previous_ts = ts
        return {"ts": format_ts(ts), **values}

    @property
    def meter_resets(self) -> list[int]:
        """The ts (epoch ms) of every reading so far that follows a meter reset."""
        return self.model.reset_ms if isinstance(self.model, EnergyModel) else []

    def take(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` readings."""
        return [self.next_reading() for _ in range(count)]
