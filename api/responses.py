"""The error responses routes declare in the OpenAPI document, all in the one error shape."""

from __future__ import annotations

from typing import Any, Final

from api.schemas import ErrorBody

Responses = dict[int | str, dict[str, Any]]

# Declaring 422 also replaces FastAPI's default 422 schema, which is not our error shape.
INVALID: Final[Responses] = {
    422: {
        "model": ErrorBody,
        "description": "invalid request: validation, query limits, or a query parameter the"
        " route does not define (unknown_parameter) or a single-valued one given twice"
        " (repeated_parameter), named in the detail",
    },
}
AUTH: Final[Responses] = {
    401: {"model": ErrorBody, "description": "no API key, or an unknown or revoked one"},
    403: {"model": ErrorBody, "description": "the key's role does not allow this"},
}


def not_found(what: str) -> Responses:
    return {404: {"model": ErrorBody, "description": f"unknown {what}"}}


def conflict(why: str) -> Responses:
    return {409: {"model": ErrorBody, "description": why}}
