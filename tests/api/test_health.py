"""Health, the error shape, and the operational endpoints."""

from __future__ import annotations

import asyncpg
import httpx

from core.config import Settings
from devices.contract import contract_document
from stack.services import free_port
from tests.api.conftest import serve


async def test_health_reports_database_and_timescaledb(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["timescaledb"][0].isdigit()
    # Without DATABASE_READ_URL every read is the primary's, and there is no lag to report.
    assert (body["read_database"], body["replica_lag_s"]) == ("primary", None)


async def test_a_database_outage_is_503_in_the_error_shape(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    async with serve(settings, admin_headers) as (app, client):
        # min_size=0 opens nothing up front, so the pool points at a port where nothing listens.
        dead = await asyncpg.create_pool(
            f"postgresql://nobody@127.0.0.1:{free_port()}/nothing", min_size=0
        )
        live, app.state.pool = app.state.pool, dead
        try:
            health = await client.get("/api/v1/health")
            device = await client.get("/api/v1/devices/anything")
        finally:
            app.state.pool = live
            await dead.close()
        assert (await client.get("/api/v1/health")).status_code == 200
    assert health.status_code == 503
    assert health.json()["error"] == "database_unavailable"
    assert isinstance(health.json()["detail"], str)
    assert device.status_code == 503
    assert device.json() == {
        "error": "database_unavailable",
        "detail": "the database is unavailable; retry shortly",
    }


async def test_unknown_route_is_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not Found"}


async def test_wrong_method_is_405_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/health")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_validation_errors_are_422_with_loc_msg_type(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/devices", params={"kind": "water", "limit": 0})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    locs = {tuple(item["loc"]) for item in body["detail"]}
    assert locs == {("query", "kind"), ("query", "limit")}
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}


async def test_contract_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/contract")
    assert response.status_code == 200
    assert response.json() == contract_document()


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, unique: str
) -> None:
    await client.get(f"/api/v1/devices/nope-{unique}")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/api/v1/devices/{device_id}"' in text
    assert "alatau_api_request_seconds_bucket" in text
    assert unique not in text
    await client.get(f"/no/such/{unique}")
    assert 'route="unmatched",status="404"' in (await client.get("/metrics")).text


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = await client.get("/api/v1/health")
    assert len(response.headers["x-request-id"]) == 32


async def test_console_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Libraries come from npm at install time and are served locally, never from a CDN.
    assert '<script src="/static/vendor/leaflet/leaflet.js">' in page.text
    assert "https://" not in page.text
    assert '<script type="module" src="/static/console/app.js">' in page.text
    script = await client.get("/static/console/api.js")
    assert script.status_code == 200
    assert 'export const API = "/api/v1"' in script.text
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/devices/{device_id}/aggregates" in spec["paths"]
    error = spec["paths"]["/api/v1/devices"]["get"]["responses"]["422"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
