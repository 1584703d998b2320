"""The API in-process over ASGI, its lifespan run, against the session's real TimescaleDB."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from core.config import Settings
from devices.contract import Kind, metric_names, readings_table
from ingest import repository as ingest_repository


@asynccontextmanager
async def serve(
    settings: Settings, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A fresh app with its lifespan entered, and a client that talks to it without sockets
    (sending ``headers``, such as an API key, with every request)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as client:
            yield app, client


@pytest.fixture(scope="session")
async def client(
    settings: Settings, admin_headers: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as an admin calls it."""
    async with serve(settings, admin_headers) as (_, client):
        yield client


async def insert_readings(
    pool: asyncpg.Pool,
    kind: Kind,
    device_id: str,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Store readings as ingest would; each row gives ``ts``, optionally ``received_at``, and
    any metrics of the kind (the rest stay null)."""
    received = datetime.now(UTC)
    batches: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        full = {"received_at": received, **row}
        batches[tuple(full)].append((device_id, *full.values()))
    for names, records in batches.items():
        columns = ("device_id", *names)
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        await pool.executemany(
            f"INSERT INTO {readings_table(kind)} ({', '.join(columns)}) VALUES ({placeholders})",
            records,
        )
    # Ingest marks the minutes it touched for the rollup worker in the same transaction, and
    # keeps each device's newest reading for GET /latest.
    await pool.execute(
        "INSERT INTO rollup_dirty (kind, device_id, minute)"
        " SELECT DISTINCT $1, $2, time_bucket(INTERVAL '1 minute', ts)"
        " FROM unnest($3::timestamptz[]) AS t(ts)"
        " ON CONFLICT (kind, device_id, minute) DO UPDATE SET marked_at = now()",
        kind.value,
        device_id,
        [row["ts"] for row in rows],
    )
    names = metric_names(kind)
    async with pool.acquire() as conn:
        await ingest_repository.remember_latest(
            conn,
            kind,
            [
                (device_id, row["ts"], row.get("received_at", received), *map(row.get, names))
                for row in rows
            ],
        )


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value)
