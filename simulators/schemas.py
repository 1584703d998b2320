"""What a simulation is made of: the simulated devices and the validated plan of a run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from devices.contract import MAX_BATCH_READINGS, District, Kind
from devices.schemas import DeviceId

MIN_TIME_STEP_S = 0.001  # readings carry millisecond timestamps; a smaller step would repeat one
MAX_TIME_STEP_S = 86_400.0  # a traffic counting window (interval_s) is at most a day


class SimDevice(BaseModel):
    """One simulated street sensor: its identity, district and where it stands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: DeviceId
    kind: Kind
    district: District
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)

    def registration(self, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The body of ``POST /api/v1/devices`` that registers this device, with what the
        simulation knows of it (its reading period, a road's free-flow speed) in metadata."""
        return {
            "device_id": self.device_id,
            "kind": self.kind.value,
            "district": self.district.value,
            "location": {"lat": self.lat, "lon": self.lon},
            "metadata": {"simulated": True, **(metadata or {})},
        }


def truncate_to_ms(moment: datetime) -> datetime:
    """The same instant in UTC with whole milliseconds, so it survives RFC 3339 and Postgres."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _wall_step(rate_hz: float) -> float:
    # A non-positive rate is refused by the field's own validation, with its message.
    return 1.0 / rate_hz if rate_hz > 0 else MIN_TIME_STEP_S


class SimulationPlan(BaseModel):
    """How a run publishes: pace, batching, how many readings and which simulated clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_hz: float = Field(gt=0, le=10_000, description="readings per device per second")
    count: int | None = Field(default=None, ge=1, description="readings per device; None = forever")
    seed: int = 42
    batch_size: int = Field(default=1, ge=1, le=MAX_BATCH_READINGS)
    start: AwareDatetime = Field(description="ts of each device's first reading")
    time_step_s: float = Field(
        ge=MIN_TIME_STEP_S, le=MAX_TIME_STEP_S, description="ts advance per reading"
    )

    @field_validator("start")
    @classmethod
    def _whole_milliseconds(cls, value: datetime) -> datetime:
        return truncate_to_ms(value)

    @classmethod
    def resolve(
        cls,
        *,
        rate_hz: float,
        count: int | None = None,
        seed: int = 42,
        batch_size: int = 1,
        start: datetime | None = None,
        time_step_s: float | None = None,
    ) -> SimulationPlan:
        """A plan with the defaults filled in: start now, one reading's worth of wall time per
        step (no time acceleration)."""
        return cls(
            rate_hz=rate_hz,
            count=count,
            seed=seed,
            batch_size=batch_size,
            start=start if start is not None else datetime.now(UTC),
            time_step_s=time_step_s if time_step_s is not None else _wall_step(rate_hz),
        )

    @property
    def message_interval_s(self) -> float:
        """Wall time between two messages of one device."""
        return self.batch_size / self.rate_hz

    @property
    def acceleration(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.time_step_s * self.rate_hz


@dataclass
class FaultCounts:
    """What a run injected: per fault mode, the faulty readings (reading faults), messages
    (message faults) or meter resets; and the readings ingest must count as duplicates."""

    injected: Counter[str] = field(default_factory=Counter)
    duplicate_readings: int = 0
    backlog_readings: int = 0


@dataclass
class SimulationStats:
    """Counters of a run, read by the progress display and by tests. ``readings_sent`` counts
    each simulated reading once, however many times (or in what shape) it went out."""

    devices: int = 0
    connected: int = 0
    messages_sent: int = 0
    readings_sent: int = 0
    errors: int = 0
    # CONNECTs the broker refused (CONNACK codes) and those that failed otherwise (no answer in
    # time, connection lost); each was retried after a backoff.
    connect_refusals: int = 0
    connect_failures: int = 0
    faults: FaultCounts = field(default_factory=FaultCounts)
