"""The FastAPI application: resources opened in the lifespan, routes, and one error shape."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from api import docs, routes
from api.alerts import routes as alert_routes
from api.broker import monitor
from api.broker import routes as broker_routes
from api.broker.management import Management
from api.broker.service import TopicRefusals
from api.errors import http_headers, http_status
from api.keys import routes as key_routes
from api.keys.service import KeyChecker
from api.live import routes as live_routes
from api.metrics import RequestMetricsMiddleware
from api.query_params import strict_query
from api.realtime import realtime
from core.config import Settings, get_settings
from core.db import DATABASE_UNAVAILABLE, create_pool
from core.errors import AppError
from devices.credentials import DynsecClient, DynsecLogins, RegistryLogins

log = structlog.get_logger(__name__)

POOL_CLOSE_TIMEOUT_S: Final = 10.0
_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the database pools for the app's lifetime (the primary's, and the read replica's when
    ``DATABASE_READ_URL`` is set); close them, forcibly if they will not drain."""
    settings: Settings = app.state.settings
    pool = await create_pool(settings, "api")
    replica: asyncpg.Pool | None = None
    try:
        if settings.database_read_url is not None:
            replica = await create_pool(settings, "api-read", url=settings.database_read_url)
        app.state.pool, app.state.read_pool = pool, replica
        app.state.key_checker = KeyChecker(pool, replica=replica)
        app.state.topic_refusals = TopicRefusals()
        log.info(
            "api started",
            environment=settings.environment,
            edge=settings.edge.broker,
            read_replica=replica is not None,
        )
        async with _edge(app, settings), realtime(app, settings, pool, replica or pool):
            yield
    finally:
        for each in (replica, pool):
            if each is not None:
                await _close(each)
        log.info("api stopped")


async def _close(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout=POOL_CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("database pool did not drain; terminating its connections")
        pool.terminate()


@asynccontextmanager
async def _edge(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Where device logins live, by edge: Mosquitto's own store, changed over its control
    topic, or the registry alone, with the cluster's management API to drop connections."""
    if settings.edge.broker == "rabbitmq":
        management = Management(settings)
        logins = RegistryLogins(management.drop_connections, settings.edge.auth_cache_ttl_s)
        app.state.management, app.state.device_logins = management, logins
        watcher = asyncio.create_task(monitor.watch(management, settings.edge.queue))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            logins.close()
            await management.close()
        return
    client = DynsecClient(
        settings.mqtt_as(settings.api), f"alatau-api-registry-{uuid.uuid4().hex[:8]}"
    )
    app.state.management, app.state.device_logins = None, DynsecLogins(client)
    try:
        await client.start()
        yield
    finally:
        await client.stop()


def _error(
    status_code: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status_code, headers=headers)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _error(http_status(exc), exc.code, exc.detail, http_headers(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only loc, msg and type: ``input`` echoes the request and ``ctx`` may hold exceptions.
    detail = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return _error(422, "validation_error", detail)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # Starlette's only 400 is a body that is not JSON: one status for every bad body.
        return _error(422, "invalid_body", f"the request body is not valid JSON: {exc.detail}")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, exc.detail, dict(exc.headers or {}))


async def _database_gone(_: Request, exc: Exception) -> JSONResponse:
    # Tell the client to retry rather than blame its request.
    log.warning("database unavailable", error=repr(exc))
    return _error(503, "database_unavailable", "the database is unavailable; retry shortly")


async def _database_conflict(_: Request, exc: Exception) -> JSONResponse:
    # A read replica cancels a query whose rows its replay must change (SQLSTATE 40001) or
    # that holds up replay (40P01); the primary, a transaction that lost a race. Retrying works.
    log.warning("query cancelled by the database", error=repr(exc))
    return _error(
        503, "database_conflict", "the database cancelled the query (a conflict); retry shortly"
    )


async def _database_timeout(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database timeout", error=repr(exc))
    return _error(503, "database_timeout", "the database did not answer in time; retry shortly")


async def _unstorable_value(_: Request, exc: Exception) -> JSONResponse:
    # SQLSTATE class 22 (and asyncpg's own encoding checks): a value the database cannot hold,
    # such as a NUL character in text or an integer beyond 64 bits. The request is at fault.
    return _error(422, "invalid_value", f"a value cannot be stored: {str(exc)[:200]}")


async def _client_gone(_: Request, exc: Exception) -> Response:
    # The caller stopped waiting before its body arrived: under load, the broker's HTTP auth
    # backend after its timeout. Nobody reads the answer, and a traceback per request (one
    # per abandoned login) only added to the load that caused it.
    log.info("client gone before its request was read", error=repr(exc))
    return Response(status_code=499)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this response, so the server logs the traceback once.
    log.error("unhandled error", error=repr(exc))
    return _error(500, "internal_error", "internal server error")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; the database pool is opened when the app's lifespan starts."""
    app = FastAPI(
        title="Alatau City telemetry API",
        version="1",
        description=(
            "Device registry, latest and raw readings, aggregates and ingest rejections.\n\n"
            "Timestamps: every timestamp the API writes (REST, live feeds, alert feed) is RFC"
            " 3339 in UTC with `Z` and six fraction digits (`2026-12-02T09:15:00.000000Z`);"
            " aggregate buckets of the city calendar (`d`, `w`, `mo`) start at Almaty midnight"
            " and are written at its offset (`2026-12-02T00:00:00.000000+05:00`). Query"
            " timestamps take any RFC 3339 offset.\n\n"
            "Query strings: a parameter a route does not define, or a single-valued one given"
            " twice, is a 422 (`unknown_parameter`, `repeated_parameter`) naming it; repeatable"
            " parameters say so."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by api.docs from local files (works offline)
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(strict_query)],
    )
    app.state.settings = settings or get_settings()
    app.add_middleware(RequestMetricsMiddleware)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_gone)
    for conflict in (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
        app.add_exception_handler(conflict, _database_conflict)
    # Only the database is awaited with a deadline in a request: a timeout is a slow query.
    app.add_exception_handler(TimeoutError, _database_timeout)
    app.add_exception_handler(asyncpg.DataError, _unstorable_value)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(docs.router)
    app.include_router(routes.public)
    app.include_router(routes.router)
    app.include_router(key_routes.router)
    app.include_router(routes.operations)
    app.include_router(live_routes.router)
    app.include_router(alert_routes.feeds)
    app.include_router(alert_routes.router)
    app.include_router(broker_routes.router)
    app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    return app
