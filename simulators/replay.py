"""Replays a real CSV recording over MQTT: one device per station, each reading published at
its recorded moment (scaled by ``speed``), its timestamp shifted so the recording ends when the
replay does, spacing kept.

Ending at the end of the replay keeps every reading at or before the clock when it leaves, so
ingest never refuses one as from the future; the oldest ones are as old as the recording is
long (minus the time the replay took), so a recording longer than ingest's late window
(``ALATAU_INGEST__LATE_WINDOW_S``, 7 days by default) needs a wider window, or its oldest
readings are refused as ``too_old``. Values are sent as recorded: a value outside the contract's
range, or one that is not a number, is refused by ingest with its reason, never dropped here.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, Any, Final

import orjson

from core.config import Settings
from core.mqtt import publish_when_possible
from devices.contract import METRICS_BY_NAME, District, Kind, is_valid_device_id
from simulators.fleet import DISTRICT_CENTRES
from simulators.models import format_ts
from simulators.schemas import SimDevice
from simulators.service import Simulation, _Running

TS_COLUMNS: Final = ("timestamp", "datetime_utc", "ts", "time", "datetime")
VALUE_COLUMNS: Final = ("value", "value_ugm3")
STATION_COLUMNS: Final = ("station_id", "station", "sensor_id")
_NOT_IN_ID: Final = re.compile(r"[^A-Za-z0-9_-]")
_DISTRICTS: Final = tuple(District)


class RecordingError(ValueError):
    """The recording cannot be replayed as asked (missing column, bad timestamp, no rows)."""


@dataclass(frozen=True)
class RecordedReading:
    """One row of a recording: when, and the value as recorded (a number, or its raw text)."""

    ts: datetime
    value: float | int | str


@dataclass(frozen=True)
class Recording:
    """The rows of a recording per device, each device's rows in time order."""

    devices: list[SimDevice]
    readings: dict[str, list[RecordedReading]]
    metric: str

    @property
    def first_ts(self) -> datetime:
        return min(rows[0].ts for rows in self.readings.values())

    @property
    def last_ts(self) -> datetime:
        return max(rows[-1].ts for rows in self.readings.values())

    @property
    def rows(self) -> int:
        return sum(len(rows) for rows in self.readings.values())


def _pick(columns: Sequence[str], wanted: str | None, known: tuple[str, ...], what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise RecordingError(f"no {what} column {wanted!r}; columns: {', '.join(columns)}")
        return wanted
    for name in known:
        if name in columns:
            return name
    raise RecordingError(f"no {what} column among {', '.join(columns)}: name it")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _value(raw: str, integer: bool) -> float | int | str:
    """The number as recorded; text that is no finite number stays text, for ingest to refuse."""
    try:
        number = float(raw)
    except ValueError:
        return raw
    if not math.isfinite(number):
        return raw
    if integer and number.is_integer():
        return int(number)
    return number


def device_id_for(prefix: str, station: str | None) -> str:
    """``prefix`` or ``prefix-station``, with characters a device id cannot hold made ``_``."""
    identity = prefix if station is None else f"{prefix}-{_NOT_IN_ID.sub('_', station)}"
    if not is_valid_device_id(identity):
        raise RecordingError(f"{identity!r} is not a valid device id (at most 64 of A-Za-z0-9_-)")
    return identity


def _read_rows(
    path: Path,
    reader: csv.DictReader[str],
    names: tuple[str, str, str | None],
    *,
    integer: bool,
    naive_tz: tzinfo,
) -> tuple[dict[str | None, list[RecordedReading]], dict[str | None, tuple[float, float]]]:
    """Readings per station (None: the whole file) and the stations' places, where given."""
    ts_name, value_name, station_name = names
    readings: dict[str | None, list[RecordedReading]] = defaultdict(list)
    places: dict[str | None, tuple[float, float]] = {}
    for line, row in enumerate(reader, start=2):
        try:
            ts = datetime.fromisoformat(row[ts_name])
        except ValueError:
            raise RecordingError(f"{path}:{line}: bad timestamp {row[ts_name]!r}") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=naive_tz)
        station = row[station_name] if station_name else None
        readings[station].append(RecordedReading(ts, _value(row[value_name], integer)))
        if station not in places and row.get("lat") and row.get("lon"):
            places[station] = (float(row["lat"]), float(row["lon"]))
    return readings, places


def load_recording(
    path: Path,
    *,
    kind: Kind,
    metric: str,
    prefix: str,
    ts_column: str | None = None,
    value_column: str | None = None,
    station_column: str | None = None,
    single_device: bool = False,
    naive_tz: tzinfo = UTC,
    last: timedelta | None = None,
) -> Recording:
    """Read a CSV (optionally gzipped): one device per station (or one for the whole file);
    with ``last``, only the rows of that span before the recording's newest row."""
    found = METRICS_BY_NAME[kind].get(metric)
    if found is None:
        raise RecordingError(f"{kind.value} has no metric {metric!r}")
    with _open(path) as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or [])
        station_name = None
        if not single_device and (station_column or any(c in columns for c in STATION_COLUMNS)):
            station_name = _pick(columns, station_column, STATION_COLUMNS, "station")
        names = (
            _pick(columns, ts_column, TS_COLUMNS, "timestamp"),
            _pick(columns, value_column, VALUE_COLUMNS, "value"),
            station_name,
        )
        readings, places = _read_rows(path, reader, names, integer=found.integer, naive_tz=naive_tz)
    if not readings:
        raise RecordingError(f"{path} holds no rows")
    if last is not None:
        newest = max(max(rows, key=lambda r: r.ts).ts for rows in readings.values())
        kept = {s: [r for r in rows if r.ts >= newest - last] for s, rows in readings.items()}
        readings = defaultdict(list, {s: rows for s, rows in kept.items() if rows})
    devices: list[SimDevice] = []
    by_device: dict[str, list[RecordedReading]] = {}
    for index, station in enumerate(sorted(readings, key=str)):
        district = _DISTRICTS[index % len(_DISTRICTS)]
        lat, lon = places.get(station, DISTRICT_CENTRES[district])
        identity = device_id_for(prefix, station)
        if identity in by_device:
            raise RecordingError(f"two stations make the device id {identity!r}")
        devices.append(
            SimDevice(device_id=identity, kind=kind, district=district, lat=lat, lon=lon)
        )
        by_device[identity] = sorted(readings[station], key=lambda reading: reading.ts)
    return Recording(devices, by_device, metric)


class Replay(Simulation):
    """A recording published by its devices, with the connections of a simulation (Last Will,
    ``online``/``offline``, QoS 1, clean shutdown)."""

    def __init__(
        self,
        settings: Settings,
        recording: Recording,
        *,
        speed: float = 1.0,
        end: datetime | None = None,
        record: bool = False,
        api_key: str | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0: as fast as possible)")
        super().__init__(settings, recording.devices, record=record, api_key=api_key)
        self.recording = recording
        self.speed = speed
        self._end = end
        self._shift: timedelta | None = None
        self._started_at: float | None = None

    def registry_metadata(self) -> dict[str, dict[str, Any]]:
        """Each station's reading period: the median spacing of its recorded readings."""
        periods: dict[str, dict[str, Any]] = {}
        for device_id, readings in self.recording.readings.items():
            gaps = [
                (later.ts - earlier.ts).total_seconds()
                for earlier, later in itertools.pairwise(readings)
            ]
            positive = [gap for gap in gaps if gap > 0]
            if positive:
                periods[device_id] = {"expected_interval_s": statistics.median(positive)}
        return periods

    @property
    def duration_s(self) -> float:
        """Wall time the replay takes (0 when as fast as possible)."""
        span = (self.recording.last_ts - self.recording.first_ts).total_seconds()
        return span / self.speed if self.speed > 0 else 0.0

    def shift(self) -> timedelta:
        """Added to every recorded timestamp: the last reading lands at the end of the replay
        (or at ``end``), so none is ahead of the clock when it is published."""
        if self._shift is None:
            end = self._end or datetime.now(UTC) + timedelta(seconds=self.duration_s)
            # Whole milliseconds, as published timestamps are: shifted times stay exact.
            shift_ms = (end - self.recording.last_ts) // timedelta(milliseconds=1)
            self._shift = timedelta(milliseconds=shift_ms)
        return self._shift

    def shifted(self, reading: RecordedReading) -> dict[str, Any]:
        """A recorded reading as published."""
        return {"ts": format_ts(reading.ts + self.shift()), self.recording.metric: reading.value}

    async def _publish_device(self, running: _Running) -> None:
        loop = asyncio.get_running_loop()
        if self._started_at is None:
            self._started_at = loop.time()
            self.shift()
        first_ts = self.recording.first_ts
        device = running.device
        for reading in self.recording.readings[device.device_id]:
            if self.speed > 0:
                due = self._started_at + (reading.ts - first_ts).total_seconds() / self.speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            published = self.shifted(reading)
            await publish_when_possible(running.client, running.telemetry, orjson.dumps(published))
            self.stats.messages_sent += 1
            self.stats.readings_sent += 1
            if self.record:
                self.published.append((device.kind, device.device_id, published))
