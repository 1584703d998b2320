"""The API's one error hierarchy; every error leaves as ``{"error": code, "detail": ...}``."""

from __future__ import annotations

from typing import Any, ClassVar, Final

import asyncpg

# Failures that mean the database is away rather than that it refused the query: a 503, retry.
DATABASE_GONE: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionError,
)


class ApiError(Exception):
    """Base of every error the API reports on purpose: an HTTP status and a stable snake code."""

    status_code: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: Any = None, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.code = code or self.default_code
        self.detail = detail


class NotFound(ApiError):
    status_code = 404
    default_code = "not_found"


class Unauthorized(ApiError):
    """No key, or one we do not know: the client should authenticate (RFC 6750)."""

    status_code = 401
    default_code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(ApiError):
    """A known key whose role does not allow this."""

    status_code = 403
    default_code = "forbidden"


class Conflict(ApiError):
    status_code = 409
    default_code = "conflict"


class UnsupportedMediaType(ApiError):
    status_code = 415
    default_code = "unsupported_media_type"


class InvalidQuery(ApiError):
    """The request parsed but asks for something we refuse (a bad bucket, too many buckets...)."""

    status_code = 422
    default_code = "invalid_query"


# The name other parts of the code base reach for; the status is the same 422.
BadRequest = InvalidQuery


class ServiceUnavailable(ApiError):
    status_code = 503
    default_code = "service_unavailable"
