"""Batches parsed messages, writes each batch in one transaction, and only then acknowledges
them (all of a batch at once): a crash anywhere before the commit leaves them with the broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import structlog

from core.config import IngestSettings
from core.db import DATABASE_UNAVAILABLE, RETRYABLE, Connection
from devices import service as registry
from devices.contract import Kind, telemetry_topic
from devices.schemas import Presence
from devices.service import DeviceDirectory
from ingest import metrics, repository
from ingest.echo import Echoes, EchoLimiter
from ingest.schemas import FlushResult, ParsedMessage, Reason, Rejection

log = structlog.get_logger(__name__)

# Acknowledges the ack tokens of a committed batch (ingest.bulkack.BulkAckHandler.acknowledge).
Acknowledge = Callable[[list[int]], object]
# A batch: its messages, and the ack tokens of those that need one (QoS 1).
Batch = tuple[list[ParsedMessage], list[int]]


def _acknowledge_nothing(acks: list[int]) -> None:
    return None


def conflict_rejection(kind: Kind, conflict: repository.Conflict) -> Rejection:
    """A reading whose key is stored with other values: refused, the stored one kept."""
    ts = conflict.ts.isoformat()
    kept = orjson.dumps(conflict.kept).decode()
    refused = orjson.dumps(conflict.refused).decode()
    return Rejection(
        conflict.received_at,
        telemetry_topic(kind, conflict.device_id),
        kind.value,
        conflict.device_id,
        Reason.CONFLICTING_DUPLICATE,
        f"a reading with ts {ts} is already stored with other values: kept {kept},"
        f" refused {refused}",
        orjson.dumps({"ts": ts, **conflict.refused}),
        ts,
    )


@dataclass
class Totals:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class IngestService:
    """Collects messages into batches by size or age and writes them with COPY."""

    def __init__(self, pool: asyncpg.Pool, settings: IngestSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._pending: list[ParsedMessage] = []
        self._pending_acks: list[int] = []
        self._pending_readings = 0
        self._oldest_at = 0.0
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = asyncio.Event()
        self._directory = DeviceDirectory(
            refresh_s=settings.device_refresh_s, recheck_s=settings.unknown_device_recheck_s
        )
        self._acknowledge: Acknowledge = _acknowledge_nothing
        self.echoes = Echoes(
            EchoLimiter(settings.echo_rate_per_s, settings.echo_burst), self._kind_of
        )
        self.totals = Totals()

    def _kind_of(self, device_id: str) -> Kind | None:
        state = self._directory.get(device_id)
        return state.kind if state is not None else None

    def set_acknowledge(self, acknowledge: Acknowledge) -> None:
        """Who acknowledges a batch's messages (their ack tokens) once it is committed."""
        self._acknowledge = acknowledge

    def add(self, message: ParsedMessage, ack: int | None) -> None:
        """Queue a message; its ``ack`` token is acknowledged once the message is durably
        stored or durably rejected, and never if the process stops first."""
        # Plain and synchronous: it runs for every message, straight from the MQTT read loop.
        if not self._pending:
            self._oldest_at = time.monotonic()
            self._has_items.set()
        self._pending.append(message)
        if ack is not None:
            self._pending_acks.append(ack)
        self._pending_readings += message.size
        if self._pending_readings >= self._settings.batch_size:
            self._full.set()
        # Gauges and counters move once per batch, not per message: this is the hot path.

    async def run(self) -> None:
        """Flush batches until ``close`` is called; then write what is left and return.

        Up to ``flush_concurrency`` batches are written at once on their own connections, so
        the database works on one while Python parses the next; MQTT lets a receiver
        acknowledge QoS 1 messages in any order, and the (device, ts) key makes order moot.
        """
        slots = asyncio.Semaphore(self._settings.flush_concurrency)
        writing: set[asyncio.Task[FlushResult | None]] = set()

        def finished(task: asyncio.Task[FlushResult | None]) -> None:
            writing.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "batch write failed; its messages stay unacknowledged",
                    error=repr(task.exception()),
                )

        while not self._closing.is_set():
            await _first_of(self._has_items, self._closing)
            deadline = self._oldest_at + self._settings.flush_interval_s
            while self._pending_readings < self._settings.batch_size and not self._closing.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._full.clear()
                try:
                    await asyncio.wait_for(_first_of(self._full, self._closing), remaining)
                except TimeoutError:
                    break
            # Taken only once a slot is free: while both are busy the batch keeps growing.
            await slots.acquire()
            task = asyncio.create_task(self._write_batch(self._take()))
            writing.add(task)
            task.add_done_callback(finished)
        try:
            if writing:
                await asyncio.gather(*writing, return_exceptions=True)
        finally:
            for task in list(writing):
                task.cancel()
        await self.flush()

    def close(self) -> None:
        """Ask ``run`` to finish: batches being written complete, the rest is flushed once."""
        self._closing.set()

    async def flush(self) -> FlushResult | None:
        """Write everything pending now; used on shutdown and by tests."""
        return await self._write_batch(self._take())

    async def _write_batch(self, batch: Batch) -> FlushResult | None:
        messages, acks = batch
        if not messages:
            return None
        # Cancelled mid-write (shutdown) or a fault of ours raises out of here before the
        # acknowledgement: the messages stay unacknowledged and the broker delivers them again.
        result = await self._write_with_retry(messages)
        self._acknowledge(acks)
        return result

    def _take(self) -> Batch:
        batch = (self._pending, self._pending_acks)
        self._pending, self._pending_acks = [], []
        metrics.QUEUED_READINGS.set(self._pending_readings)
        metrics.UNACKED.set(len(batch[1]))
        received: dict[str, int] = {}
        for message in batch[0]:
            kind = message.kind.value if message.kind else "none"
            received[kind] = received.get(kind, 0) + 1
        for kind, count in received.items():
            metrics.MESSAGES_RECEIVED.labels(kind).inc(count)
        self._pending_readings = 0
        self._has_items.clear()
        self._full.clear()
        return batch

    async def _write_with_retry(self, messages: list[ParsedMessage]) -> FlushResult:
        delay = self._settings.retry_initial_s
        while True:
            try:
                return await self._write(messages)
            except RETRYABLE as exc:
                metrics.DB_RETRIES.inc()
                log.warning(
                    "database unavailable, batch kept unacknowledged",
                    error=repr(exc),
                    messages=len(messages),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max_s)
            except asyncpg.PostgresError as exc:
                if len(messages) == 1:
                    message = messages[0]
                    log.error("database refused a message", error=repr(exc), topic=message.topic)
                    message.reject_all(Reason.STORAGE_ERROR, f"{type(exc).__name__}: {exc}")
                    continue
                # One message the database refuses must not sink the others: write them apart.
                log.warning(
                    "database refused a batch, writing messages one by one", error=repr(exc)
                )
                results = [await self._write_with_retry([message]) for message in messages]
                return FlushResult(
                    received=sum(r.received for r in results),
                    inserted=sum(r.inserted for r in results),
                    duplicates=sum(r.duplicates for r in results),
                    rejected=sum(r.rejected for r in results),
                )

    async def _write(self, messages: Sequence[ParsedMessage]) -> FlushResult:
        started = time.perf_counter()
        async with self._pool.acquire() as conn:
            await self._check_devices(conn, messages)
            rows_by_kind: dict[Kind, list[tuple[Any, ...]]] = {}
            rejections = []
            devices: dict[str, Presence] = {}
            for message in messages:
                rejections.extend(message.rejections)
                if message.kind is None or message.device_id is None:
                    continue
                if message.rows:
                    rows_by_kind.setdefault(message.kind, []).extend(message.rows)
                earlier = devices.get(message.device_id)
                if message.rows or message.status is not None:
                    devices[message.device_id] = Presence(
                        message.device_id,
                        message.kind,
                        bool(message.rows) or (earlier is not None and earlier.seen),
                        message.status or (earlier.status if earlier else None),
                        message.received_at
                        if message.status is not None
                        else (earlier.status_at if earlier else None),
                    )
            stored: dict[Kind, repository.Stored] = {}
            async with conn.transaction():
                # Kinds in one fixed order: each kind's rows lock its dirty minutes and latest
                # rows, so two batches taking kinds in different orders deadlock (seen with 300
                # devices of three kinds on the city edge).
                for kind in (each for each in Kind if each in rows_by_kind):
                    stored[kind] = await repository.store_readings(conn, kind, rows_by_kind[kind])
                    rejections.extend(conflict_rejection(kind, c) for c in stored[kind].conflicts)
                if rejections:
                    await repository.store_rejections(conn, (r.record() for r in rejections))
                if devices:
                    await registry.record_presence(conn, list(devices.values()))
        return await self._committed(rows_by_kind, stored, rejections, started)

    async def _committed(
        self,
        rows_by_kind: dict[Kind, list[tuple[Any, ...]]],
        stored: dict[Kind, repository.Stored],
        rejections: list[Rejection],
        started: float,
    ) -> FlushResult:
        """Count a committed batch (once: a batch retried after an outage is counted once) and
        echo its rejections to their devices."""
        duplicates = 0
        for kind, outcome in stored.items():
            repeated = len(rows_by_kind[kind]) - outcome.inserted - len(outcome.conflicts)
            metrics.READINGS_STORED.labels(kind.value).inc(outcome.inserted)
            metrics.READINGS_DUPLICATE.labels(kind.value).inc(repeated)
            duplicates += repeated
        inserted = sum(outcome.inserted for outcome in stored.values())
        for rejection in rejections:
            metrics.READINGS_REJECTED.labels(rejection.reason.value).inc()
        # Conflicting readings are among the rows and among the rejections: counted once.
        received = inserted + duplicates + len(rejections)
        metrics.BATCH_SIZE.observe(received)
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        result = FlushResult(received - len(rejections), inserted, duplicates, len(rejections))
        self.totals.received += received
        self.totals.inserted += inserted
        self.totals.duplicates += duplicates
        self.totals.rejected += len(rejections)
        if rejections:
            await self._echo(rejections)
        return result

    async def _echo(self, rejections: list[Rejection]) -> None:
        try:
            await self.echoes.send(rejections)
        except (OSError, RuntimeError) as exc:
            # Stored already (and acknowledged next): an echo lost with its connection is only
            # counted, never a reason to write the batch again.
            metrics.ECHOES_FAILED.inc(len(rejections))
            log.warning("rejection echoes not sent", error=repr(exc), rejections=len(rejections))

    async def _check_devices(self, conn: Connection, messages: Sequence[ParsedMessage]) -> None:
        """Refuse messages of devices that are unknown, disabled, or registered as another kind."""
        directory = self._directory
        await directory.reload_if_due(conn)
        await directory.look_up(
            conn,
            directory.due_for_lookup(
                m.device_id for m in messages if not m.device_checked and m.device_id is not None
            ),
        )
        for message in messages:
            if message.device_checked or message.device_id is None or message.kind is None:
                continue
            if message.status is not None:
                # A status of an unknown device changes nothing; the UPDATE matches no row.
                continue
            message.device_checked = True
            state = directory.get(message.device_id)
            if state is None:
                message.reject_all(
                    Reason.UNKNOWN_DEVICE, f"device {message.device_id!r} is not registered"
                )
            elif not state.enabled:
                message.reject_all(
                    Reason.DEVICE_DISABLED, f"device {message.device_id!r} is disabled"
                )
            elif state.kind is not message.kind:
                message.reject_all(
                    Reason.KIND_MISMATCH,
                    f"device {message.device_id!r} is registered as {state.kind.value}, "
                    f"not {message.kind.value}",
                )

    async def apply_retention(self) -> int | None:
        """Drop rejection chunks past their retention; None if another replica holds the job."""
        async with self._pool.acquire() as conn:
            dropped = await repository.drop_old_rejections(
                conn, timedelta(days=self._settings.rejections_retention_days)
            )
        if dropped:
            log.info("old rejections dropped", chunks=dropped)
        return dropped

    async def run_retention(self) -> None:
        """Apply retention now and then until cancelled; an outage only delays it."""
        while True:
            try:
                await self.apply_retention()
            except DATABASE_UNAVAILABLE as exc:
                log.warning("retention postponed, database unavailable", error=repr(exc))
            await asyncio.sleep(self._settings.retention_interval_s)
