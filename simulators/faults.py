"""Faulty firmware: each mode switchable by a rate, drawn deterministically from the seed, and
counted, so a test can check that ingest refuses or deduplicates exactly what was injected.

Reading faults touch one reading (at most one fault per reading); message faults touch one
message (at most one per message). A malformed or duplicated message carries no reading fault,
so every injected fault maps to exactly one outcome at ingest (see ``EXPECTED_REJECTION``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.contract import FUTURE_TOLERANCE, MAX_BATCH_READINGS, METRICS, Kind, Metric
from simulators.models import format_ts
from simulators.randomness import stable_key, uniform
from simulators.schemas import FaultCounts


class FaultMode(StrEnum):
    # reading faults
    WRONG_TYPE = "wrong_type"  # a metric as a string, or a float where a count belongs
    OUT_OF_RANGE = "out_of_range"  # a metric beyond its physical range (a saturated sensor)
    UNKNOWN_FIELD = "unknown_field"  # a field the contract does not define (new firmware)
    FUTURE_SKEW = "future_skew"  # the device clock runs ahead of real time
    CLOCK_RESET = "clock_reset"  # the real-time clock lost power: back to 2000-01-01
    OUT_OF_ORDER = "out_of_order"  # sent after the reading that follows it
    LATE = "late"  # held back for several messages, then sent
    # message faults
    MALFORMED_JSON = "malformed_json"  # the payload is cut in half
    DUPLICATE = "duplicate"  # the same message again, as a QoS 1 redelivery is
    OFFLINE_GAP = "offline_gap"  # silent for a while, then the backlog as one JSON array
    DROPOUT = "dropout"  # the connection drops without DISCONNECT: the broker sends the Will
    BURST = "burst"  # silent for a while, then every held reading back to back
    # a model event, not a transport fault: counted with the faults
    METER_RESET = "meter_reset"  # the energy register starts again from zero


READING_FAULTS: Final = (
    FaultMode.WRONG_TYPE,
    FaultMode.OUT_OF_RANGE,
    FaultMode.UNKNOWN_FIELD,
    FaultMode.FUTURE_SKEW,
    FaultMode.CLOCK_RESET,
    FaultMode.OUT_OF_ORDER,
    FaultMode.LATE,
)
MESSAGE_FAULTS: Final = (
    FaultMode.MALFORMED_JSON,
    FaultMode.DUPLICATE,
    FaultMode.OFFLINE_GAP,
    FaultMode.DROPOUT,
    FaultMode.BURST,
)
# The reason code (README, "Why a reading is refused") ingest gives each refused fault: one
# rejection per faulty reading, one per malformed message.
EXPECTED_REJECTION: Final[dict[FaultMode, str]] = {
    FaultMode.WRONG_TYPE: "wrong_type",
    FaultMode.OUT_OF_RANGE: "out_of_range",
    FaultMode.UNKNOWN_FIELD: "unknown_field",
    FaultMode.FUTURE_SKEW: "future_timestamp",
    FaultMode.CLOCK_RESET: "too_old",
    FaultMode.MALFORMED_JSON: "invalid_json",
}
UNKNOWN_FIELD_NAME: Final = "fw_debug"
# Where a reset real-time clock starts counting again: far older than any late window.
CLOCK_RESET_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
# Readings per backlog message: half the contract's maximum, so that even long air readings
# stay well below ingest's default payload limit (256 KiB) and no backlog is refused whole.
BACKLOG_CHUNK: Final = MAX_BATCH_READINGS // 2
_CH_READING, _CH_MESSAGE, _CH_METRIC = 1, 2, 3


class FaultPlan(BaseModel):
    """Which faults a run injects and how often: a rate per reading or per message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rates: dict[FaultMode, float] = Field(default_factory=dict)
    gap_messages: int = Field(default=5, ge=1, description="messages held by an offline gap")
    burst_messages: int = Field(default=5, ge=1, description="messages held before a burst")
    late_messages: int = Field(default=10, ge=2, description="messages a late reading waits")
    skew_s: float = Field(
        default=3600.0,
        gt=FUTURE_TOLERANCE.total_seconds(),
        description="how far ahead of real time a skewed clock runs",
    )
    dropout_s: float = Field(default=0.3, ge=0, description="time offline after a dropout")

    @model_validator(mode="after")
    def _rates_are_probabilities(self) -> FaultPlan:
        for mode, rate in self.rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"rate of {mode.value} must be within [0, 1]")
        for group, name in ((READING_FAULTS, "reading"), (MESSAGE_FAULTS, "message")):
            if sum(self.rates.get(mode, 0.0) for mode in group) > 1:
                raise ValueError(f"{name} fault rates add up to more than 1")
        return self

    @classmethod
    def parse(cls, specs: list[str]) -> FaultPlan:
        """From ``MODE=RATE`` (e.g. ``malformed_json=0.01``) and ``PARAMETER=VALUE`` (e.g.
        ``gap_messages=20``) strings, as the command line gives them."""
        rates: dict[FaultMode, float] = {}
        parameters: dict[str, str] = {}
        modes = {mode.value: mode for mode in FaultMode}
        for spec in specs:
            name, sep, value = spec.partition("=")
            name = name.strip()
            if not sep:
                raise ValueError(f"fault {spec!r} is not NAME=VALUE")
            if name in modes:
                try:
                    rates[modes[name]] = float(value)
                except ValueError:
                    raise ValueError(f"rate of {name} is not a number: {value!r}") from None
            elif name in cls.model_fields and name != "rates":
                parameters[name] = value
            else:
                known = ", ".join([*modes, *(f for f in cls.model_fields if f != "rates")])
                raise ValueError(f"unknown fault {name!r}; known: {known}")
        return cls.model_validate({"rates": rates, **parameters})

    @property
    def active(self) -> bool:
        """Whether any transport fault can happen (meter resets live in the energy model)."""
        return any(rate > 0 for mode, rate in self.rates.items() if mode != FaultMode.METER_RESET)

    def rate(self, mode: FaultMode) -> float:
        return self.rates.get(mode, 0.0)


def expected_rejections(counts: FaultCounts) -> dict[str, int]:
    """The rejections ingest must store for the injected faults, by reason code."""
    expected: Counter[str] = Counter()
    for mode, reason in EXPECTED_REJECTION.items():
        if counts.injected[mode.value]:
            expected[reason] += counts.injected[mode.value]
    return dict(expected)


@dataclass(frozen=True)
class Send:
    """One message to publish; ``good`` are the readings ingest stores from it."""

    payload: bytes
    good: list[dict[str, Any]]
    bad: list[tuple[FaultMode, Any]]
    duplicate: bool = False


@dataclass(frozen=True)
class Drop:
    """Drop off as a device losing power does (the broker publishes the Last Will), stay away
    ``offline_s``, reconnect."""

    offline_s: float


Step = Send | Drop
_Item = tuple[dict[str, Any], FaultMode | None]  # a reading as it will be sent, and its fault


def _out_of_range(metric: Metric) -> float | int:
    """Twice the maximum (a saturated sensor), or as far below a minimum-only range."""
    if metric.maximum is not None:
        value = metric.maximum + max(abs(metric.maximum), 1.0)
    else:  # every metric has at least one bound
        low = metric.minimum or 0.0
        value = low - max(abs(low), 1.0)
    return int(value) if metric.integer else float(value)


def corrupt(mode: FaultMode, kind: Kind, reading: dict[str, Any], choice: float) -> dict[str, Any]:
    """The reading as faulty firmware sends it; ``choice`` in [0, 1) picks the metric."""
    metrics = [m for m in METRICS[kind] if m.name in reading]
    metric = metrics[int(choice * len(metrics))]
    bad = dict(reading)
    if mode is FaultMode.WRONG_TYPE:
        value = reading[metric.name]
        bad[metric.name] = value + 0.5 if metric.integer else str(value)
    elif mode is FaultMode.OUT_OF_RANGE:
        bad[metric.name] = _out_of_range(metric)
    elif mode is FaultMode.UNKNOWN_FIELD:
        bad[UNKNOWN_FIELD_NAME] = {"heap_free": 18_432, "reboots": 3}
    else:
        raise ValueError(f"{mode.value} does not corrupt a reading")
    return bad


class DeviceFaults:
    """Turns one device's readings into the messages its faulty firmware sends."""

    def __init__(
        self,
        plan: FaultPlan,
        *,
        seed: int,
        device_id: str,
        kind: Kind,
        batched: bool,
        counts: FaultCounts | None = None,
    ) -> None:
        self.plan = plan
        self.kind = kind
        self.batched = batched
        self.counts = counts if counts is not None else FaultCounts()
        self._key = stable_key(seed, device_id, "faults")
        self._message_index = 0
        self._reading_index = 0
        self._delayed: list[tuple[int, dict[str, Any]]] = []  # (release at message, reading)
        self._holding: FaultMode | None = None
        self._held: list[_Item] = []
        self._hold_left = 0

    def _draw(self, group: tuple[FaultMode, ...], channel: int, index: int) -> FaultMode | None:
        """At most one mode of the group: consecutive slices of [0, 1) sized by the rates."""
        point = uniform(self._key, channel, index)
        for mode in group:
            point -= self.plan.rate(mode)
            if point < 0:
                return mode
        return None

    def _release(self, index: int) -> list[_Item]:
        due = [reading for at, reading in self._delayed if at <= index]
        self._delayed = [(at, reading) for at, reading in self._delayed if at > index]
        return [(reading, None) for reading in due]

    def _messages(self, items: list[_Item], *, singles: bool) -> list[Send]:
        if not items:
            return []
        if singles:
            return [self._send([item], array=False) for item in items]
        chunks = range(0, len(items), BACKLOG_CHUNK)
        return [self._send(items[i : i + BACKLOG_CHUNK], array=True) for i in chunks]

    def _send(self, items: list[_Item], *, array: bool) -> Send:
        bodies = [body for body, _ in items]
        payload = orjson.dumps(bodies if array else bodies[0])
        good = [body for body, mode in items if mode is None]
        bad = [(mode, body) for body, mode in items if mode is not None]
        return Send(payload, good, bad)

    def _reading_fault(
        self, mode: FaultMode, reading: dict[str, Any], index: int, now: datetime, choice: float
    ) -> dict[str, Any] | None:
        """The reading as ``mode`` sends it now, or None when it is held back for later."""
        if mode is FaultMode.OUT_OF_ORDER:
            self._delayed.append((index + 1, reading))
            return None
        if mode is FaultMode.LATE:
            self._delayed.append((index + self.plan.late_messages, reading))
            return None
        if mode is FaultMode.FUTURE_SKEW:
            ahead = max(datetime.fromisoformat(reading["ts"]), now)
            return {**reading, "ts": format_ts(ahead + timedelta(seconds=self.plan.skew_s))}
        if mode is FaultMode.CLOCK_RESET:
            since_boot = timedelta(seconds=self._reading_index)
            return {**reading, "ts": format_ts(CLOCK_RESET_EPOCH + since_boot)}
        return corrupt(mode, self.kind, reading, choice)

    def shape(self, readings: list[dict[str, Any]], now: datetime) -> list[Step]:
        """The steps that send this tick's ``readings`` (and whatever was held for now)."""
        index = self._message_index
        self._message_index += 1
        message_fault = None if self._holding else self._draw(MESSAGE_FAULTS, _CH_MESSAGE, index)
        injected = self.counts.injected
        if message_fault is FaultMode.MALFORMED_JSON:
            # Readings lost in the broken payload; held readings wait for a readable message.
            injected[message_fault.value] += 1
            body = orjson.dumps(readings if self.batched else readings[0])
            return [Send(body[: len(body) // 2], [], [(message_fault, r) for r in readings])]
        items: list[_Item] = []
        for reading in readings:
            mode = None
            if message_fault is not FaultMode.DUPLICATE:
                mode = self._draw(READING_FAULTS, _CH_READING, self._reading_index)
            choice = uniform(self._key, _CH_METRIC, self._reading_index)
            self._reading_index += 1
            if mode is None:
                items.append((reading, None))
                continue
            injected[mode.value] += 1
            faulty = self._reading_fault(mode, reading, index, now, choice)
            if faulty is not None:
                items.append((faulty, mode))
        # Released after this tick's own readings: they arrive out of order.
        items.extend(self._release(index))
        if self._holding is not None:
            return self._hold(items)
        if message_fault in (FaultMode.OFFLINE_GAP, FaultMode.BURST) and items:
            injected[message_fault.value] += 1
            self._holding = message_fault
            self._hold_left = (
                self.plan.gap_messages
                if message_fault is FaultMode.OFFLINE_GAP
                else self.plan.burst_messages
            )
            return self._hold(items)
        sends = self._messages(items, singles=not self.batched)
        if message_fault is FaultMode.DROPOUT and sends:
            injected[message_fault.value] += 1
            self.counts.backlog_readings += len(items)
            backlog = self._messages(items, singles=False)
            return [Drop(self.plan.dropout_s), *backlog]
        if message_fault is FaultMode.DUPLICATE and sends:
            injected[message_fault.value] += 1
            again = [Send(s.payload, s.good, s.bad, duplicate=True) for s in sends]
            self.counts.duplicate_readings += sum(len(s.good) for s in sends)
            return [*sends, *again]
        return list(sends)

    def _hold(self, items: list[_Item]) -> list[Step]:
        self._held.extend(items)
        self._hold_left -= 1
        return self._flush_held() if self._hold_left <= 0 else []

    def _flush_held(self) -> list[Step]:
        held, mode = self._held, self._holding
        self._held, self._holding, self._hold_left = [], None, 0
        if mode is FaultMode.OFFLINE_GAP:
            self.counts.backlog_readings += len(held)
            return list(self._messages(held, singles=False))
        # A burst: the held readings leave back to back, as the device normally sends them.
        return list(self._messages(held, singles=not self.batched))

    def finish(self) -> list[Step]:
        """Everything still held, sent before the device stops."""
        steps = self._flush_held() if self._holding else []
        rest = self._release(self._message_index + self.plan.late_messages)
        return [*steps, *self._messages(rest, singles=not self.batched)]
