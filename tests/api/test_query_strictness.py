"""Unknown or invalid filters are refused with a 422 that names them, on every route, in the one
error shape; several values are taken only where a filter is documented as repeatable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from devices.contract import District, Kind
from ingest.schemas import Reason
from tests.api.conftest import insert_readings
from tests.support import register


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/alerts", {"district": "green"}),
        ("/api/v1/devices", {"colour": "red"}),
        ("/api/v1/latest", {"kinds": "air"}),
        ("/api/v1/ingest/rejections", {"device": "x"}),
        ("/api/v1/city/summary", {"when": "now"}),
        ("/api/v1/alert-rules", {"kind": "air"}),
        ("/api/v1/keys", {"role": "admin"}),
        ("/api/v1/health", {"verbose": "1"}),
    ],
)
async def test_an_unknown_query_parameter_is_a_422_naming_it(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "unknown_parameter"
    (name,) = params
    assert f"unknown query parameter: {name};" in body["detail"]


async def test_the_alerts_listing_names_what_it_takes(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/alerts", params={"district": "green"})).json()
    assert "this route takes:" in body["detail"]
    assert "state" in body["detail"].split("this route takes:")[1]


async def test_a_caller_without_a_key_hears_401_before_any_query_complaint(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/api/v1/devices", params={"colour": "red"}, headers={"Authorization": ""}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "missing_api_key"


async def test_a_single_valued_filter_given_twice_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/devices", params=[("kind", "air"), ("kind", "energy")])
    assert response.status_code == 422
    assert response.json() == {
        "error": "repeated_parameter",
        "detail": "given more than once: kind; each takes one value",
    }


async def test_latest_takes_several_kinds(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    devices = {
        Kind.AIR: (f"lk-air-{unique}", {"pm10": 1.0}),
        Kind.ENERGY: (f"lk-energy-{unique}", {"power_kw": 2.0}),
        Kind.TRAFFIC: (f"lk-traffic-{unique}", {"avg_speed_kmh": 3.0}),
    }
    for kind, (device_id, values) in devices.items():
        await register(db_pool, device_id, kind, District.GREEN)
        await insert_readings(
            db_pool, kind, device_id, [{"ts": now - timedelta(minutes=1), **values}]
        )
    mine = {device_id for device_id, _ in devices.values()}

    async def kinds_seen(
        params: list[tuple[str, str | int | float | bool | None]],
    ) -> set[tuple[str, str]]:
        response = await client.get("/api/v1/latest", params=params)
        assert response.status_code == 200, response.text
        return {
            (item["device_id"], item["kind"])
            for item in response.json()["items"]
            if item["device_id"] in mine
        }

    both = await kinds_seen([("kind", "air"), ("kind", "energy"), ("district", "green")])
    assert both == {(devices[Kind.AIR][0], "air"), (devices[Kind.ENERGY][0], "energy")}
    assert await kinds_seen([("kind", "traffic")]) == {(devices[Kind.TRAFFIC][0], "traffic")}
    assert len(await kinds_seen([])) == 3
    bogus = await client.get("/api/v1/latest", params=[("kind", "air"), ("kind", "water")])
    assert bogus.status_code == 422
    assert bogus.json()["error"] == "validation_error"


async def test_rejections_refuse_a_reversed_range_and_an_unknown_reason(
    client: httpx.AsyncClient,
) -> None:
    now = datetime.now(UTC)
    reversed_range = await client.get(
        "/api/v1/ingest/rejections",
        params={"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()},
    )
    assert reversed_range.status_code == 422
    assert reversed_range.json() == {
        "error": "invalid_range",
        "detail": "from must be earlier than to",
    }
    # The same answer as every other range route gives.
    readings = await client.get(
        "/api/v1/city/aggregates",
        params={
            "metric": "pm10",
            "bucket": "1h",
            "from": now.isoformat(),
            "to": (now - timedelta(hours=1)).isoformat(),
        },
    )
    assert readings.json()["error"] == "invalid_range"

    bogus = await client.get("/api/v1/ingest/rejections", params={"reason": "bogus"})
    assert bogus.status_code == 422
    body = bogus.json()
    assert body["error"] == "validation_error"
    (problem,) = body["detail"]
    assert problem["loc"] == ["query", "reason"]
    for reason in Reason:
        assert f"'{reason.value}'" in problem["msg"]
