"""How the api renders the one error hierarchy (core/errors.py): an HTTP status per family,
always as ``{"error": code, "detail": ...}``. Only the errors that exist because of HTTP live
here (authentication, media types)."""

from __future__ import annotations

from typing import Final

from core.errors import AppError, Conflict, Invalid, NotFound, Unavailable


class Unauthorized(AppError):
    """No key, or one we do not know: the client should authenticate (RFC 6750)."""

    default_code = "unauthorized"


class Forbidden(AppError):
    """A known key whose role does not allow this."""

    default_code = "forbidden"


class UnsupportedMediaType(AppError):
    default_code = "unsupported_media_type"


_STATUS: Final[dict[type[AppError], int]] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Unavailable: 503,
    Unauthorized: 401,
    Forbidden: 403,
    UnsupportedMediaType: 415,
}
_HEADERS: Final[dict[type[AppError], dict[str, str]]] = {
    Unauthorized: {"WWW-Authenticate": "Bearer"}
}


def http_status(error: AppError) -> int:
    """The status of the error's nearest family; 500 for an error of no known family."""
    for family in type(error).__mro__:
        if family in _STATUS:
            return _STATUS[family]
    return 500


def http_headers(error: AppError) -> dict[str, str] | None:
    for family in type(error).__mro__:
        if family in _HEADERS:
            return _HEADERS[family]
    return None
