"""API key routes: admins issue, list and revoke keys; anyone can ask who their key is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.auth import Admin, Reader
from api.dependencies import KeyCheckerDep, PoolDep
from api.keys import service
from api.keys.schemas import ApiKey, ApiKeyCreate, ApiKeyList, Caller, IssuedApiKey
from api.responses import AUTH, INVALID, not_found

router = APIRouter(prefix="/api/v1", tags=["keys"], responses={**INVALID, **AUTH})


@router.get("/keys/me")
async def whoami(caller: Reader) -> Caller:
    """The calling key's id, name and role."""
    return Caller(key_id=caller.key_id, name=caller.name, role=caller.role)


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def issue_key(pool: PoolDep, body: ApiKeyCreate, caller: Admin) -> IssuedApiKey:
    """Issue a key; its token is shown only in this answer."""
    return await service.issue_key(pool, body, created_by=caller.name)


@router.get("/keys")
async def list_keys(
    pool: PoolDep,
    caller: Admin,
    include_revoked: Annotated[bool, Query()] = False,
) -> ApiKeyList:
    """Keys in the order they were issued (never their tokens)."""
    return ApiKeyList(items=await service.list_keys(pool, include_revoked=include_revoked))


@router.delete("/keys/{key_id}", responses=not_found("key"))
async def revoke_key(pool: PoolDep, checker: KeyCheckerDep, key_id: str, caller: Admin) -> ApiKey:
    """Revoke a key: refused at once by this replica, by every replica within seconds."""
    return await service.revoke_key(pool, key_id, checker)
