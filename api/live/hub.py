"""Fan-out of live readings to clients with per-device conflation.

The MQTT callback calls ``LiveHub.publish`` synchronously: it never awaits a client. Each client
has a dict of pending readings keyed by device, so a client that does not read holds at most one
reading per device (the newest) and never slows the others or the broker connection.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from datetime import datetime

from api.live.schemas import LiveFilter, LiveReading
from api.schemas import Values
from devices.contract import District, Kind


class Subscriber:
    """One client's pending readings: the newest per device, until the client takes them."""

    def __init__(self, live_filter: LiveFilter) -> None:
        self.filter = live_filter
        self._pending: dict[str, LiveReading] = {}
        self._ready = asyncio.Event()
        self.offered = 0
        self.conflated = 0

    def offer(self, reading: LiveReading) -> None:
        self.offered += 1
        if reading.device_id in self._pending:
            self.conflated += 1
        self._pending[reading.device_id] = reading
        self._ready.set()

    def take(self) -> list[LiveReading]:
        """Everything pending, oldest change first; the client's queue is empty afterwards."""
        pending, self._pending = self._pending, {}
        self._ready.clear()
        return sorted(pending.values(), key=lambda reading: reading.seq)

    async def wait(self, timeout_s: float) -> bool:
        """Wait until a reading is pending; False on timeout."""
        if self._pending:
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def backlog(self) -> int:
        return len(self._pending)


class LiveHub:
    """The newest reading per device seen by this replica, and the clients to tell about it."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self._seq = itertools.count(1)
        self.last_seq = 0
        self.latest: dict[str, LiveReading] = {}
        self._subscribers: set[Subscriber] = set()

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
        for subscriber in self._subscribers:
            if subscriber.filter.matches(kind, district, device_id):
                subscriber.offer(reading)
        return reading

    def forget(self, device_ids: Iterable[str]) -> None:
        """Drop devices that were unregistered or disabled from the snapshot."""
        for device_id in device_ids:
            self.latest.pop(device_id, None)

    def subscribe(self, live_filter: LiveFilter) -> Subscriber:
        subscriber = Subscriber(live_filter)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    @property
    def clients(self) -> int:
        return len(self._subscribers)

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
