"""All of ingest's SQL: staging tables, COPY, deduplicating inserts, rejections (the device
registry's own SQL is in devices/repository.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any, Final

import asyncpg

from core.db import Connection
from devices.contract import METRICS, Kind, latest_table, metric_names, readings_table
from ingest.schemas import REJECTION_COLUMNS

_COLUMNS: Final = {kind: ("device_id", "ts", "received_at", *metric_names(kind)) for kind in Kind}


def _staging_table(kind: Kind) -> str:
    return f"ingest_stage_{kind.value}"


def _insert_from_stage_sql(kind: Kind) -> str:
    columns = ", ".join(_COLUMNS[kind])
    return (
        f"INSERT INTO {readings_table(kind)} ({columns}) "
        f"SELECT {columns} FROM {_staging_table(kind)} "
        "ON CONFLICT (device_id, ts) DO NOTHING"
    )


_INSERT_FROM_STAGE: Final = {kind: _insert_from_stage_sql(kind) for kind in Kind}


def _conflicts_sql(kind: Kind) -> str:
    """Staged readings whose key is stored with other values (the stored one came first: from
    an earlier batch, or earlier in this one). Equal values are a redelivery, not a conflict."""
    names = metric_names(kind)
    staged = ", ".join(f"s.{name}" for name in names)
    stored = ", ".join(f"r.{name}" for name in names)
    stage = _staging_table(kind)
    return (
        f"SELECT s.device_id, s.ts, s.received_at, {staged}, {stored}"
        f" FROM {stage} s JOIN {readings_table(kind)} r"
        " ON r.device_id = s.device_id AND r.ts = s.ts"
        f" WHERE r.ts >= (SELECT min(ts) FROM {stage}) AND r.ts <= (SELECT max(ts) FROM {stage})"
        f" AND ({staged}) IS DISTINCT FROM ({stored})"
    )


_CONFLICTS: Final = {kind: _conflicts_sql(kind) for kind in Kind}


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reading refused because its key is stored with other values."""

    device_id: str
    ts: Any
    received_at: Any
    refused: dict[str, Any]
    kept: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: int
    conflicts: list[Conflict] = field(default_factory=list)


def _conflict(kind: Kind, record: asyncpg.Record) -> Conflict:
    names = metric_names(kind)
    values = list(record.values())
    refused, kept = values[3 : 3 + len(names)], values[3 + len(names) :]
    return Conflict(
        record["device_id"],
        record["ts"],
        record["received_at"],
        {name: value for name, value in zip(names, refused, strict=True) if value is not None},
        {name: value for name, value in zip(names, kept, strict=True) if value is not None},
    )


# The minutes this batch touched, for the rollup worker (rollups/), in the batch's transaction.
# DO UPDATE (not NOTHING) locks each row until commit, so the worker can never clear a minute
# whose readings it cannot see yet; rows go in key order so two batches cannot deadlock.
_MARK_DIRTY: Final = {
    kind: "INSERT INTO rollup_dirty (kind, device_id, minute)"
    f" SELECT DISTINCT '{kind.value}', device_id, time_bucket(INTERVAL '1 minute', ts)"
    f" FROM {_staging_table(kind)} ORDER BY 2, 3"
    " ON CONFLICT (kind, device_id, minute) DO UPDATE SET marked_at = EXCLUDED.marked_at"
    for kind in Kind
}


def _remember_latest_sql(kind: Kind) -> str:
    table, columns = latest_table(kind), _COLUMNS[kind]
    types = ["text", "timestamptz", "timestamptz", *(m.sql_type for m in METRICS[kind])]
    arrays = ", ".join(f"${n}::{sql_type}[]" for n, sql_type in enumerate(types, start=1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" SELECT * FROM unnest({arrays}) ORDER BY 1"
        f" ON CONFLICT (device_id) DO UPDATE SET {updates} WHERE {table}.ts < EXCLUDED.ts"
    )


# Each device's newest reading of the batch replaces the stored latest only when strictly newer:
# an equal ts is a redelivery the raw table kept the first copy of. Rows go in device order so
# two batches cannot deadlock (both lock their dirty minutes first, then these rows).
_REMEMBER_LATEST: Final = {kind: _remember_latest_sql(kind) for kind in Kind}


async def remember_latest(conn: Connection, kind: Kind, rows: Sequence[tuple[Any, ...]]) -> None:
    """Keep ``{kind}_latest`` the newest stored reading per device; call in the transaction that
    stored ``rows`` (``_COLUMNS`` order: device_id, ts, received_at, metrics...)."""
    newest: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        held = newest.get(row[0])
        if held is None or row[1] > held[1]:  # on a tie the first copy is the stored one
            newest[row[0]] = row
    if newest:
        columns = zip(*newest.values(), strict=True)
        await conn.execute(_REMEMBER_LATEST[kind], *(list(column) for column in columns))


async def prepare_connection(conn: Connection) -> None:
    """Per-connection staging tables; rows vanish at commit, so a batch never sees another's."""
    for kind in Kind:
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_staging_table(kind)} "
            f"(LIKE {readings_table(kind)} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )


# The same marking when the rows went straight into the hypertable: minutes from Python.
_MARK_DIRTY_MINUTES: Final = (
    "INSERT INTO rollup_dirty (kind, device_id, minute)"
    " SELECT DISTINCT $1, device_id, minute FROM unnest($2::text[], $3::timestamptz[])"
    " AS m(device_id, minute) ORDER BY 2, 3"
    " ON CONFLICT (kind, device_id, minute) DO UPDATE SET marked_at = EXCLUDED.marked_at"
)


async def store_readings(conn: Connection, kind: Kind, rows: Sequence[tuple[Any, ...]]) -> Stored:
    """Store the rows that are new; returns how many, and the rows whose key is stored with
    other values (to be refused as conflicting duplicates). Call inside the batch's transaction.

    Most batches hold only new readings (a live stream, a backlog), so they are first COPYed
    straight into the hypertable under a savepoint. A key already stored (a redelivery, a
    replay) or repeated in the batch aborts that; then the rows go through the staging table,
    ``ON CONFLICT DO NOTHING`` keeps only the new ones (the first of a key), and the staged
    rows are compared with what is stored under their keys.
    """
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                readings_table(kind), records=rows, columns=_COLUMNS[kind]
            )
    except asyncpg.UniqueViolationError:
        await conn.copy_records_to_table(_staging_table(kind), records=rows, columns=_COLUMNS[kind])
        status = await conn.execute(_INSERT_FROM_STAGE[kind])
        await conn.execute(_MARK_DIRTY[kind])
        await remember_latest(conn, kind, rows)
        conflicts = [_conflict(kind, record) for record in await conn.fetch(_CONFLICTS[kind])]
        return Stored(int(status.rsplit(" ", 1)[1]), conflicts)
    minutes = {(row[0], row[1].astimezone(UTC).replace(second=0, microsecond=0)) for row in rows}
    await conn.execute(
        _MARK_DIRTY_MINUTES,
        kind.value,
        [device_id for device_id, _ in minutes],
        [minute for _, minute in minutes],
    )
    await remember_latest(conn, kind, rows)
    return Stored(len(rows))


async def store_rejections(conn: Connection, records: Iterable[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(
        "ingest_rejections", records=list(records), columns=REJECTION_COLUMNS
    )


# Any constant shared by every replica: only the one holding it applies retention.
_RETENTION_LOCK_KEY: Final = 0x616C6174_7265746E


async def drop_old_rejections(conn: Connection, older_than: timedelta) -> int | None:
    """Drop whole chunks of rejections older than ``older_than``; returns how many, or None when
    another replica is already doing it."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RETENTION_LOCK_KEY):
            return None
        dropped = await conn.fetch(
            "SELECT drop_chunks('ingest_rejections', older_than => now() - $1::interval)",
            older_than,
        )
    return len(dropped)
