"""API key models: roles, what an admin asks for, and what the API shows."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from core.timestamps import UtcTimestamp


class Role(StrEnum):
    """``reader`` reads everything; ``operator`` also acknowledges alerts; ``admin`` also
    manages devices, alert rules and keys."""

    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.READER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="who or what uses the key")
    role: Role


class Caller(BaseModel):
    key_id: str
    name: str
    role: Role


class ApiKey(BaseModel):
    key_id: str
    name: str
    role: Role
    created_at: UtcTimestamp
    created_by: str | None = Field(description="name of the key that issued it; null from the CLI")
    revoked_at: UtcTimestamp | None


class IssuedApiKey(ApiKey):
    token: str = Field(description="the bearer token; shown only now, store it safely")


class ApiKeyList(BaseModel):
    items: list[ApiKey]
