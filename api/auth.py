"""Who may call what: every route but health needs an API key, and writes need a role.

Keys travel as ``Authorization: Bearer <token>``. Browsers cannot set headers on EventSource or
WebSocket connections, so the live feeds also take ``?access_token=<token>``; no other route
does, to keep keys out of URLs and their logs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.dependencies import KeyCheckerDep
from api.errors import Forbidden, Unauthorized
from api.keys.schemas import Role
from api.keys.service import KeyChecker, Principal

bearer = HTTPBearer(auto_error=False, description="an API key: `Bearer alk_...`")


async def _principal_for(checker: KeyChecker, token: str | None) -> Principal:
    if not token:
        raise Unauthorized(
            "an API key is required: send Authorization: Bearer <key>", code="missing_api_key"
        )
    principal = await checker.check(token)
    if principal is None:
        raise Unauthorized("the API key is unknown or revoked", code="invalid_api_key")
    return principal


async def authenticate(checker: KeyChecker, token: str | None) -> Principal:
    """The key's principal; none, or an unknown or revoked one, is a 401."""
    return await _principal_for(checker, token)


async def principal(
    checker: KeyCheckerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return await _principal_for(checker, credentials.credentials if credentials else None)


async def live_principal(
    checker: KeyCheckerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    access_token: Annotated[
        str | None, Query(description="the API key, for clients that cannot send headers")
    ] = None,
) -> Principal:
    token = credentials.credentials if credentials else access_token
    return await _principal_for(checker, token)


async def websocket_principal(websocket: WebSocket, checker: KeyChecker) -> Principal:
    """The key of a WebSocket handshake: the bearer header or ``access_token``."""
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = websocket.query_params.get("access_token", "")
    return await _principal_for(checker, token or None)


def require(role: Role) -> Any:
    """A dependency that lets only keys of ``role`` or above through."""

    async def check(found: Annotated[Principal, Depends(principal)]) -> Principal:
        if not found.role.allows(role):
            raise Forbidden(
                f"this needs the {role.value} role; key {found.key_id} is a {found.role.value}",
                code="insufficient_role",
            )
        return found

    return Depends(check)


Reader = Annotated[Principal, require(Role.READER)]
Operator = Annotated[Principal, require(Role.OPERATOR)]
Admin = Annotated[Principal, require(Role.ADMIN)]
