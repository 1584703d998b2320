"""Issuing, listing, revoking and checking API keys.

A token is ``alk_{key_id}_{secret}``: the id finds the row, a SHA-256 of the 256-bit random
secret proves it (no slow hash is needed for a secret nobody chose). Checked keys are remembered
for a few seconds, so a busy client costs no query per request; a revocation reaches this
replica at once and the others within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

import asyncpg
import structlog

from api.keys import repository
from api.keys.schemas import ApiKey, ApiKeyCreate, IssuedApiKey, Role
from core.config import Settings
from core.db import DATABASE_UNAVAILABLE, Connection, create_pool
from core.errors import NotFound

log = structlog.get_logger(__name__)

TOKEN_PREFIX: Final = "alk"  # noqa: S105 (a marker, not a secret)
CACHE_TTL_S: Final = 5.0
CACHE_MAX_ENTRIES: Final = 10_000
PRIMARY_CHECK_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, name and role."""

    key_id: str
    name: str
    role: Role


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
    )


def split_token(token: str) -> tuple[str, str] | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or len(key_id) != 12 or not secret:
        return None
    return key_id, secret


async def _insert(
    conn: Connection, key_id: str, secret: str, body: ApiKeyCreate, created_by: str | None
) -> asyncpg.Record:
    """Store a key: only the digest of its secret is kept."""
    return await repository.insert_key(
        conn,
        key_id=key_id,
        name=body.name,
        role=body.role.value,
        secret_hash=_digest(secret),
        created_by=created_by,
    )


async def issue_key(
    pool: asyncpg.Pool, body: ApiKeyCreate, *, created_by: str | None
) -> IssuedApiKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    async with pool.acquire() as conn:
        row = await _insert(conn, key_id, secret, body, created_by)
    log.info("api key issued", key_id=key_id, role=body.role.value, created_by=created_by)
    return IssuedApiKey(**_key(row).model_dump(), token=f"{TOKEN_PREFIX}_{key_id}_{secret}")


async def issue_key_at(database_url: str, body: ApiKeyCreate) -> IssuedApiKey:
    """``issue_key`` from a tool that has no pool of its own (make run, benches, tests)."""
    pool = await create_pool(Settings(database_url=database_url), "api-keys")
    try:
        return await issue_key(pool, body, created_by=None)
    finally:
        await pool.close()


async def ensure_key(pool: asyncpg.Pool, token: str, body: ApiKeyCreate) -> ApiKey:
    """Register a token chosen by the operator (a deployment's bootstrap admin key) unless it is
    already there; a token whose id is taken by another secret is refused."""
    parts = split_token(token)
    if parts is None:
        raise ValueError(f"a key looks like {TOKEN_PREFIX}_<12 hex digits>_<secret>")
    key_id, secret = parts
    if len(secret) < 32 or any(c not in "0123456789abcdef" for c in key_id):
        raise ValueError("the key id must be 12 hex digits and the secret at least 32 characters")
    async with pool.acquire() as conn:
        existing = await repository.active_key(conn, key_id)
        if existing is not None:
            if not hmac.compare_digest(bytes(existing["secret_hash"]), _digest(secret)):
                raise ValueError(f"key id {key_id} is taken by another key")
            return _key(existing)
        row = await _insert(conn, key_id, secret, body, None)
    log.info("api key registered", key_id=key_id, role=body.role.value)
    return _key(row)


async def list_keys(pool: asyncpg.Pool, *, include_revoked: bool = False) -> list[ApiKey]:
    async with pool.acquire() as conn:
        return [
            _key(row) for row in await repository.list_keys(conn, include_revoked=include_revoked)
        ]


class KeyChecker:
    """Checks bearer tokens against the database, remembering good ones for ``ttl_s``.

    Keys are looked up on the primary, so a key issued or revoked a moment ago counts at once;
    while the primary is away, on the read replica if there is one, so reads keep answering
    (a revocation then reaches this check within the replica's lag)."""

    def __init__(
        self, pool: asyncpg.Pool, ttl_s: float = CACHE_TTL_S, replica: asyncpg.Pool | None = None
    ) -> None:
        self._pool = pool
        self._replica = replica
        self._ttl_s = ttl_s
        self._known: dict[str, tuple[float, Principal]] = {}

    async def _active_key(self, key_id: str) -> asyncpg.Record | None:
        async def on_primary() -> asyncpg.Record | None:
            async with self._pool.acquire() as conn:
                return await repository.active_key(conn, key_id)

        if self._replica is None:
            return await on_primary()
        try:
            # A primary that does not answer (cut off, not refusing) must not hold every
            # request for the connect timeout when the replica could answer.
            return await asyncio.wait_for(on_primary(), PRIMARY_CHECK_TIMEOUT_S)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("primary unavailable; key checked on the read replica", error=repr(exc))
        async with self._replica.acquire() as conn:
            return await repository.active_key(conn, key_id)

    async def check(self, token: str) -> Principal | None:
        now = time.monotonic()
        known = self._known.get(token)
        if known is not None and known[0] > now:
            return known[1]
        parts = split_token(token)
        if parts is None:
            return None
        key_id, secret = parts
        row = await self._active_key(key_id)
        if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), _digest(secret)):
            return None
        principal = Principal(key_id=key_id, name=row["name"], role=Role(row["role"]))
        if len(self._known) >= CACHE_MAX_ENTRIES:
            self._known.clear()
        self._known[token] = (now + self._ttl_s, principal)
        return principal

    def forget(self, key_id: str) -> None:
        for token, (_, principal) in list(self._known.items()):
            if principal.key_id == key_id:
                del self._known[token]


async def revoke_key(pool: asyncpg.Pool, key_id: str, checker: KeyChecker | None = None) -> ApiKey:
    async with pool.acquire() as conn:
        row = await repository.revoke_key(conn, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r}", code="api_key_not_found")
    if checker is not None:
        checker.forget(key_id)
    log.info("api key revoked", key_id=key_id)
    return _key(row)
