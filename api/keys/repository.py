"""All SQL of API keys."""

from __future__ import annotations

import asyncpg

from core.db import Connection

_COLUMNS = "key_id, name, role, created_at, created_by, revoked_at"


async def insert_key(
    conn: Connection,
    *,
    key_id: str,
    name: str,
    role: str,
    secret_hash: bytes,
    created_by: str | None,
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO api_keys (key_id, name, role, secret_hash, created_by)"
        f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
        key_id,
        name,
        role,
        secret_hash,
        created_by,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


async def list_keys(conn: Connection, *, include_revoked: bool) -> list[asyncpg.Record]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, key_id"
    )
    return rows


async def active_key(conn: Connection, key_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    return row


async def revoke_key(conn: Connection, key_id: str) -> asyncpg.Record | None:
    """Revoke once: a second revocation keeps the first time."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
        f" WHERE key_id = $1 RETURNING {_COLUMNS}",
        key_id,
    )
    return row
