"""SQL of the live feeds: the registry as the live fan-out needs it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from core.db import Connection
from devices.contract import District, Kind


class LiveDevice(NamedTuple):
    kind: Kind
    district: District
    enabled: bool


async def load_devices(
    conn: Connection, device_ids: Sequence[str] | None = None
) -> dict[str, LiveDevice]:
    """Kind, district and enabled flag of all devices, or of the ones named."""
    if device_ids is None:
        rows = await conn.fetch("SELECT device_id, kind, district, enabled FROM devices")
    else:
        rows = await conn.fetch(
            "SELECT device_id, kind, district, enabled FROM devices"
            " WHERE device_id = ANY($1::text[])",
            list(device_ids),
        )
    return {
        row["device_id"]: LiveDevice(Kind(row["kind"]), District(row["district"]), row["enabled"])
        for row in rows
    }
