"""Models of the live feeds: the filter a client asks for and the events it receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from api.schemas import Values
from core import timestamps
from devices.contract import District, Kind


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """Which readings a client wants; an empty set means "any"."""

    kinds: frozenset[Kind] = frozenset()
    districts: frozenset[District] = frozenset()
    devices: frozenset[str] = frozenset()

    def matches(self, kind: Kind, district: District, device_id: str) -> bool:
        return (
            (not self.kinds or kind in self.kinds)
            and (not self.districts or district in self.districts)
            and (not self.devices or device_id in self.devices)
        )

    def accepts(self, reading: LiveReading) -> bool:
        return self.matches(reading.kind, reading.district, reading.device_id)


@dataclass(frozen=True, slots=True)
class LiveReading:
    """The newest validated reading of a device as this replica saw it; ``data`` is its JSON,
    serialized once and shared by every client."""

    seq: int
    device_id: str
    kind: Kind
    district: District
    ts: datetime
    received_at: datetime
    values: Values
    data: bytes = field(repr=False)

    @staticmethod
    def encode(
        *,
        device_id: str,
        kind: Kind,
        district: District,
        ts: datetime,
        received_at: datetime,
        values: Values,
    ) -> bytes:
        document: dict[str, Any] = {
            "device_id": device_id,
            "kind": kind.value,
            "district": district.value,
            "ts": ts,
            "received_at": received_at,
            "values": values,
        }
        return timestamps.dumps(document)
