"""The one error hierarchy of every part: what went wrong, as a stable snake_case code.

Parts that are not the api raise these and never import the api; the api renders each family
with its HTTP status (api/errors.py) in the one shape ``{"error": code, "detail": ...}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Base of every error reported on purpose: a stable code and a detail for the caller."""

    default_code: ClassVar[str] = "internal_error"

    def __init__(self, detail: Any = None, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.code = code or self.default_code
        self.detail = detail


class NotFound(AppError):
    """The thing asked for does not exist."""

    default_code = "not_found"


class Conflict(AppError):
    """The request clashes with the current state (a taken id, an alert no longer open)."""

    default_code = "conflict"


class Invalid(AppError):
    """The request parsed but asks for something refused (a bad bucket, too many buckets...)."""

    default_code = "invalid_query"


class Unavailable(AppError):
    """A resource this needs (database, broker, a disabled feature) is away; retry later."""

    default_code = "service_unavailable"
