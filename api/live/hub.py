"""The newest reading per device of this replica, fanned out to live clients.

The broker callback calls ``LiveHub.publish`` synchronously: it never awaits a client. Each
client's mailbox (core/fanout.py) holds at most one reading per device, the newest, so a client
that does not read never slows the others or the broker connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable
from datetime import datetime

from api.live.schemas import LiveFilter, LiveReading
from api.schemas import Values
from core.fanout import FanOut, Mailbox
from devices.contract import District, Kind

Subscriber = Mailbox[str, LiveReading]


class LiveHub:
    """The newest reading per device seen by this replica, and the clients to tell about it."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self._seq = itertools.count(1)
        self.last_seq = 0
        self.latest: dict[str, LiveReading] = {}
        self._fanout: FanOut[str, LiveReading] = FanOut()
        self._filters: dict[Subscriber, LiveFilter] = {}
        # Told what the clients filter on whenever one comes or goes (the source's bindings).
        self.on_filters: Callable[[Collection[LiveFilter]], None] | None = None

    def publish(
        self,
        *,
        device_id: str,
        kind: Kind,
        district: District,
        ts: datetime,
        received_at: datetime,
        values: Values,
    ) -> LiveReading | None:
        """Record a reading and offer it to matching clients; an older one than we hold is
        ignored (the feed shows the newest by reading time)."""
        current = self.latest.get(device_id)
        if current is not None and current.ts >= ts:
            return None
        self.last_seq = next(self._seq)
        data = LiveReading.encode(
            device_id=device_id,
            kind=kind,
            district=district,
            ts=ts,
            received_at=received_at,
            values=values,
        )
        reading = LiveReading(
            self.last_seq, device_id, kind, district, ts, received_at, values, data
        )
        self.latest[device_id] = reading
        self._fanout.publish(device_id, reading)
        return reading

    def forget(self, device_ids: Iterable[str]) -> None:
        """Drop devices that were unregistered or disabled from the snapshot."""
        for device_id in device_ids:
            self.latest.pop(device_id, None)

    def subscribe(self, live_filter: LiveFilter) -> Subscriber:
        subscriber = self._fanout.subscribe(live_filter.accepts)
        self._filters[subscriber] = live_filter
        self._filters_changed()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._fanout.unsubscribe(subscriber)
        if self._filters.pop(subscriber, None) is not None:
            self._filters_changed()

    def _filters_changed(self) -> None:
        if self.on_filters is not None:
            self.on_filters(set(self._filters.values()))

    @property
    def clients(self) -> int:
        return self._fanout.readers

    def snapshot(self, live_filter: LiveFilter, after_seq: int = 0) -> list[LiveReading]:
        """The newest reading of each matching device, only those changed after ``after_seq``."""
        return sorted(
            (
                reading
                for reading in self.latest.values()
                if reading.seq > after_seq
                and live_filter.matches(reading.kind, reading.district, reading.device_id)
            ),
            key=lambda reading: reading.seq,
        )

    def event_id(self, seq: int) -> str:
        return f"{self.replica_id}.{seq}"

    def resume_point(self, last_event_id: str | None) -> int:
        """The sequence to resume after, or 0 (a full snapshot) for an id of another replica."""
        if not last_event_id:
            return 0
        replica, _, seq = last_event_id.rpartition(".")
        if replica != self.replica_id or not seq.isdigit():
            return 0
        return min(int(seq), self.last_seq)
