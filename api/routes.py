"""HTTP routes: parse the request, call the service, return its model. Nothing else lives here."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api import aggregates, service, summary
from api.auth import Admin, require
from api.dependencies import (
    AggregateQueryDep,
    LimitDep,
    LoginsDep,
    ManagementDep,
    PoolDep,
    ReadPoolDep,
    ReplicaDep,
    SettingsDep,
    TimeRangeDep,
)
from api.errors import UnsupportedMediaType
from api.keys.schemas import Role
from api.responses import AUTH, INVALID, not_found
from api.schemas import (
    AggregateScope,
    AggregateSeries,
    AreaSummary,
    AwareDatetime,
    CitySummary,
    ErrorBody,
    Health,
    LatestList,
    LatestReading,
    ReadingsPage,
    RejectionList,
)
from core.config import Settings
from core.errors import Invalid
from devices import bulk
from devices import service as registry
from devices.bulk import MAX_BULK_DEVICES
from devices.connect import device_connect
from devices.contract import District, Kind, contract_document
from devices.schemas import (
    CommissionedDevice,
    Device,
    DeviceBulkResult,
    DeviceCreate,
    DevicePage,
    DevicePatch,
    DeviceStatus,
    MqttLogin,
)
from ingest.schemas import Reason

STATIC_DIR: Final = Path(__file__).parent / "static"

_NOT_FOUND: Final = not_found("device")
_BROKER_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    503: {"model": ErrorBody, "description": "the broker did not apply the login change"},
}

# Every route here needs a key (any role); writes ask for more with an ``Admin`` parameter.
router = APIRouter(
    prefix="/api/v1", responses={**INVALID, **AUTH}, dependencies=[require(Role.READER)]
)
public = APIRouter(prefix="/api/v1", responses=INVALID)
operations = APIRouter()


@public.get(
    "/health",
    tags=["health"],
    responses={503: {"model": ErrorBody, "description": "database unreachable"}},
)
async def health(
    pool: PoolDep, replica: ReplicaDep, settings: SettingsDep, management: ManagementDep
) -> Health:
    """Whether the API can reach the primary and the read replica (with its replay lag), the
    TimescaleDB version, and on the city edge the ingest queue's backlog and each ingest
    replica's unacknowledged deliveries."""
    return await service.health(
        pool, replica, settings.edge.broker, management, settings.edge.queue
    )


# --- registry ---------------------------------------------------------------------------------


@router.post(
    "/devices",
    tags=["devices"],
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"model": ErrorBody, "description": "the device id is taken"},
        **_BROKER_ERRORS,
    },
)
async def create_device(
    pool: PoolDep, settings: SettingsDep, logins: LoginsDep, body: DeviceCreate, caller: Admin
) -> CommissionedDevice:
    """Register a device and issue its MQTT login (the password is shown only in this answer),
    with where to connect (``connect``: host, ports, protocol, TLS CA, errors topic)."""
    created = await registry.create_device(pool, logins, body)
    return _with_connect(settings, created)


def _with_connect(settings: Settings, created: CommissionedDevice) -> CommissionedDevice:
    return created.model_copy(
        update={"connect": device_connect(settings, created.kind, created.device_id)}
    )


@router.post(
    "/devices/bulk",
    tags=["devices"],
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"model": ErrorBody, "description": "some ids are taken (nothing was created)"},
        **_BROKER_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/DeviceCreate"},
                        "maxItems": MAX_BULK_DEVICES,
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def create_devices(
    request: Request,
    *,
    pool: PoolDep,
    settings: SettingsDep,
    logins: LoginsDep,
    caller: Admin,
    skip_existing: Annotated[
        bool, Query(description="leave ids already registered as they are, instead of a 409")
    ] = False,
) -> DeviceBulkResult:
    """Commission many devices at once from a JSON array of devices or a CSV file (columns
    ``device_id,kind,district`` and optionally ``lat,lon,enabled,metadata``). All rows are
    checked first; a 422 lists every bad row. Logins are shown only in this answer."""
    bodies = await _commissioning_list(request)
    result = await registry.create_devices(pool, logins, bodies, skip_existing=skip_existing)
    return result.model_copy(
        update={"created": [_with_connect(settings, device) for device in result.created]}
    )


async def _commissioning_list(request: Request) -> list[DeviceCreate]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    try:
        if media_type == "text/csv":
            return bulk.parse_csv(raw.decode("utf-8-sig"))
        if media_type in {"application/json", ""}:
            items = orjson.loads(raw)
            if not isinstance(items, list):
                raise Invalid("send a JSON array of devices", code="validation_error")
            return bulk.parse_json(items)
    except bulk.BulkParseError as exc:
        raise Invalid([error.model_dump() for error in exc.errors], code="invalid_devices") from exc
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise Invalid(f"unreadable body: {exc}", code="validation_error") from exc
    raise UnsupportedMediaType(
        f"send application/json or text/csv, not {media_type!r}", code="unsupported_media_type"
    )


@router.get("/devices", tags=["devices"])
async def list_devices(
    *,
    pool: PoolDep,
    limit: LimitDep,
    kind: Kind | None = None,
    district: District | None = None,
    enabled: bool | None = None,
    status: DeviceStatus | None = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="search: part of the id, the district or metadata.name, any case",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DevicePage:
    """Registered devices in id order, filtered by a search text, kind, district, enabled and
    status; ``total`` counts every match across pages."""
    return await registry.list_devices(
        pool,
        kind=kind,
        district=district,
        enabled=enabled,
        status=status,
        search=q,
        limit=limit,
        offset=offset,
    )


@router.get("/devices/{device_id}", tags=["devices"], responses=_NOT_FOUND)
async def get_device(pool: PoolDep, device_id: str) -> Device:
    """One device."""
    return await registry.get_device(pool, device_id)


@router.patch("/devices/{device_id}", tags=["devices"], responses={**_NOT_FOUND, **_BROKER_ERRORS})
async def update_device(
    pool: PoolDep, logins: LoginsDep, device_id: str, patch: DevicePatch, caller: Admin
) -> Device:
    """Change a device's district, location, metadata or enabled flag (at the broker too)."""
    return await registry.update_device(pool, logins, device_id, patch)


@router.delete("/devices/{device_id}", tags=["devices"], responses={**_NOT_FOUND, **_BROKER_ERRORS})
async def disable_device(pool: PoolDep, logins: LoginsDep, device_id: str, caller: Admin) -> Device:
    """Disable a device: the broker drops its connection and refuses its login, and ingest
    refuses its readings. Its history is kept."""
    return await registry.disable_device(pool, logins, device_id)


@router.post(
    "/devices/{device_id}/credentials",
    tags=["devices"],
    responses={**_NOT_FOUND, **_BROKER_ERRORS},
)
async def rotate_device_login(
    pool: PoolDep, logins: LoginsDep, device_id: str, caller: Admin
) -> MqttLogin:
    """Issue a new MQTT password; connections made with the old one are dropped at once."""
    return await registry.rotate_login(pool, logins, device_id)


# --- readings ---------------------------------------------------------------------------------


@router.get(
    "/devices/{device_id}/latest",
    tags=["readings"],
    responses={404: {"model": ErrorBody, "description": "unknown device, or no readings yet"}},
)
async def latest_of_device(pool: ReadPoolDep, device_id: str) -> LatestReading:
    """The device's newest reading by reading time (not by arrival)."""
    return await service.latest_of_device(pool, device_id)


@router.get("/latest", tags=["readings"])
async def latest(
    pool: ReadPoolDep,
    kind: Annotated[
        list[Kind] | None, Query(description="repeatable: several kinds; none: every kind")
    ] = None,
    district: District | None = None,
) -> LatestList:
    """The newest reading of each device that has one, of the kinds asked for (or all)."""
    return await service.latest(pool, kind or list(Kind), district)


@router.get("/devices/{device_id}/readings", tags=["readings"], responses=_NOT_FOUND)
async def readings(
    pool: ReadPoolDep,
    device_id: str,
    window: TimeRangeDep,
    limit: LimitDep,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> ReadingsPage:
    """Raw readings in ``[from, to)`` in reading-time order, one bounded page at a time."""
    return await service.readings_page(pool, device_id, window, limit, cursor)


@router.get("/devices/{device_id}/aggregates", tags=["aggregates"], responses=_NOT_FOUND)
async def device_aggregates(
    pool: ReadPoolDep, settings: SettingsDep, device_id: str, query: AggregateQueryDep
) -> AggregateSeries:
    """``fn(metric)`` per time bucket over ``[from, to)`` for one device."""
    return await aggregates.aggregates(
        pool, settings, query, scope=AggregateScope.DEVICE, device_id=device_id
    )


@router.get("/districts/{district}/aggregates", tags=["aggregates"])
async def district_aggregates(
    pool: ReadPoolDep, settings: SettingsDep, district: District, query: AggregateQueryDep
) -> AggregateSeries:
    """``fn(metric)`` per bucket over every device of the metric's kind in a district:
    ``sum``, ``count`` and ``increase`` add up the devices, ``rate`` is the district's flow
    (each detector's vehicles per hour, summed), ``avg``/``min``/``max`` run over all the
    district's readings."""
    return await aggregates.aggregates(
        pool, settings, query, scope=AggregateScope.DISTRICT, district=district
    )


@router.get("/city/aggregates", tags=["aggregates"])
async def city_aggregates(
    pool: ReadPoolDep, settings: SettingsDep, query: AggregateQueryDep
) -> AggregateSeries:
    """``fn(metric)`` per bucket over every device of the metric's kind in the city, with the
    district route's meanings (``rate``: the city's flow, every detector's rate summed)."""
    return await aggregates.aggregates(pool, settings, query, scope=AggregateScope.CITY)


AtQuery = Annotated[
    AwareDatetime | None, Query(description="the moment the KPIs describe; default now")
]


@router.get("/districts/{district}/summary", tags=["kpis"])
async def district_summary(
    pool: ReadPoolDep, settings: SettingsDep, district: District, at: AtQuery = None
) -> AreaSummary:
    """A district's KPIs: US EPA AQI, traffic congestion against the roads' configured
    free-flow speeds, flow, energy load and consumption; each figure with its window and the
    share of that window the stored readings cover."""
    return await summary.district_summary(
        pool, district, at or datetime.now(UTC), settings.rollups.expected_interval_s
    )


@router.get("/city/summary", tags=["kpis"])
async def city_summary(pool: ReadPoolDep, settings: SettingsDep, at: AtQuery = None) -> CitySummary:
    """The city's KPIs, city-wide and per district (the figures the console's tiles show)."""
    return await summary.city_summary(
        pool, at or datetime.now(UTC), settings.rollups.expected_interval_s
    )


# --- ingest and contract ----------------------------------------------------------------------


@router.get("/ingest/rejections", tags=["ingest"])
async def rejections(
    *,
    pool: ReadPoolDep,
    limit: LimitDep,
    device_id: str | None = None,
    reason: Annotated[Reason | None, Query(description="one of the documented reasons")] = None,
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="received at or after")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to", description="received before")] = None,
) -> RejectionList:
    """Readings ingest refused, newest first, with the reason and the raw payload."""
    if start is not None and end is not None and start >= end:
        raise Invalid("from must be earlier than to", code="invalid_range")
    return await service.rejections(
        pool, device_id=device_id, reason=reason, start=start, end=end, limit=limit
    )


@router.get("/contract", tags=["contract"])
async def contract() -> dict[str, Any]:
    """Every kind's metrics with unit, type and physical range, as devices must send them."""
    return contract_document()


# --- operations -------------------------------------------------------------------------------


@operations.get("/metrics", include_in_schema=False, dependencies=[require(Role.READER)])
async def prometheus_metrics(replica: ReplicaDep) -> Response:
    await service.read_replica_state(replica)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@operations.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
