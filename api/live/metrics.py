"""Prometheus metrics of the live feeds (served by the api's ``/metrics``)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

CLIENTS: Final = Gauge("alatau_live_clients", "live feed clients connected", ["transport"])
READINGS: Final = Counter(
    "alatau_live_readings_total", "validated readings offered to the live feeds", ["kind"]
)
DROPPED: Final = Counter(
    "alatau_live_dropped_total",
    "telemetry messages not streamed (invalid, unknown, disabled or other-kind device)",
)
