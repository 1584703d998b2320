"""Query strings held to what each route declares: an unknown parameter, or a single-valued one
given more than once, is a 422 naming it, never silently ignored or reduced to one value."""

from __future__ import annotations

import types
from typing import Annotated, Any, Final, Union, get_args, get_origin

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection

from api.auth import authenticate, live_principal, principal
from api.dependencies import KeyCheckerDep
from core.errors import Invalid

_KEYED: Final = (principal, live_principal)
_SEQUENCES: Final = (list, set, frozenset, tuple)


def _repeatable(annotation: Any) -> bool:
    """Whether a query parameter's type takes several values (``list[Kind] | None``...)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _repeatable(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_repeatable(arg) for arg in get_args(annotation))
    return origin in _SEQUENCES or annotation in _SEQUENCES


class _Declared:
    """What one route's query string may hold, read once from its dependency tree."""

    def __init__(self, dependant: Dependant) -> None:
        self.repeatable: dict[str, bool] = {}
        self.needs_key = False
        pending = [dependant]
        while pending:
            current = pending.pop()
            self.needs_key = self.needs_key or current.call in _KEYED
            for field in current.query_params:
                self.repeatable[field.alias] = _repeatable(field.field_info.annotation)
            pending.extend(current.dependencies)

    def problem(self, sent: QueryParams) -> Invalid | None:
        unknown = sorted({name for name in sent if name not in self.repeatable})
        if unknown:
            allowed = ", ".join(sorted(self.repeatable)) or "none"
            plural = "s" if len(unknown) > 1 else ""
            return Invalid(
                f"unknown query parameter{plural}: {', '.join(unknown)};"
                f" this route takes: {allowed}",
                code="unknown_parameter",
            )
        repeated = sorted(
            name
            for name, many in self.repeatable.items()
            if not many and len(sent.getlist(name)) > 1
        )
        if repeated:
            return Invalid(
                f"given more than once: {', '.join(repeated)}; each takes one value",
                code="repeated_parameter",
            )
        return None


# By route identity; the route is kept beside its entry, so its id is never reused meanwhile.
_ROUTES: dict[int, tuple[APIRoute, _Declared]] = {}


def _token(connection: HTTPConnection, declared: _Declared) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token
    if "access_token" in declared.repeatable:
        return connection.query_params.get("access_token")
    return None


async def strict_query(connection: HTTPConnection, checker: KeyCheckerDep) -> None:
    """The app-wide dependency: applies to every documented HTTP route (the console page,
    /docs and the broker's callbacks are not the API). A caller without a valid key learns
    that first (401), as on any other refused request."""
    route = connection.scope.get("route")
    if connection.scope["type"] != "http" or not isinstance(route, APIRoute):
        return
    if not route.include_in_schema:
        return
    entry = _ROUTES.get(id(route))
    if entry is None or entry[0] is not route:
        entry = _ROUTES[id(route)] = (route, _Declared(route.dependant))
    declared = entry[1]
    problem = declared.problem(connection.query_params)
    if problem is None:
        return
    if declared.needs_key:
        await authenticate(checker, _token(connection, declared))
    raise problem
