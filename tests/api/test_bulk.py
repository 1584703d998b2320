"""Commissioning many devices at once, from CSV or JSON: all rows checked, all or nothing."""

from __future__ import annotations

import httpx

from core.config import Settings
from tests.api.test_credentials import as_device, refusal

CSV_HEADERS = {"Content-Type": "text/csv"}


def district_csv(prefix: str, count: int) -> str:
    lines = ["device_id,kind,district,lat,lon,enabled,metadata"]
    for n in range(count):
        kind = ("traffic", "energy", "air")[n % 3]
        lines.append(f'{prefix}-{n:03d},{kind},green,43.9,77.1,true,"{{""pole"": {n}}}"')
    return "\n".join(lines) + "\n"


async def test_a_district_from_csv_gets_devices_and_logins(
    client: httpx.AsyncClient, settings: Settings, unique: str
) -> None:
    prefix = f"bulk-{unique}"
    response = await client.post(
        "/api/v1/devices/bulk", content=district_csv(prefix, 30), headers=CSV_HEADERS
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["skipped"] == []
    created = {device["device_id"]: device for device in body["created"]}
    assert len(created) == 30
    first = created[f"{prefix}-001"]
    assert first["kind"] == "energy"
    assert first["location"] == {"lat": 43.9, "lon": 77.1}
    assert first["metadata"] == {"pole": 1}
    assert first["mqtt"]["topic_prefix"] == f"alatau/energy/{prefix}-001/"
    assert await refusal(as_device(settings, first["mqtt"])) is None

    listed = await client.get("/api/v1/devices", params={"district": "green", "limit": 10_000})
    assert {f"{prefix}-{n:03d}" for n in range(30)} <= {
        d["device_id"] for d in listed.json()["items"]
    }


async def test_bad_rows_are_all_named_and_nothing_is_created(
    client: httpx.AsyncClient, unique: str
) -> None:
    prefix = f"bulkbad-{unique}"
    text = (
        "device_id,kind,district\n"
        f"{prefix}-ok,air,gate\n"
        f"{prefix}-kind,submarine,gate\n"
        f"{prefix} space,air,gate\n"
        f"{prefix}-ok,air,gate\n"
    )
    response = await client.post("/api/v1/devices/bulk", content=text, headers=CSV_HEADERS)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_devices"
    assert sorted({error["row"] for error in body["detail"]}) == [3, 4, 5]
    assert (await client.get(f"/api/v1/devices/{prefix}-ok")).status_code == 404

    unknown_column = "device_id,kind,district,colour\nx,air,gate,red\n"
    response = await client.post(
        "/api/v1/devices/bulk", content=unknown_column, headers=CSV_HEADERS
    )
    assert response.status_code == 422
    assert "unknown column(s): colour" in response.text


async def test_existing_ids_are_a_conflict_or_skipped_on_request(
    client: httpx.AsyncClient, unique: str
) -> None:
    prefix = f"bulkdup-{unique}"
    first = [{"device_id": f"{prefix}-{n}", "kind": "air", "district": "gate"} for n in range(3)]
    assert (await client.post("/api/v1/devices/bulk", json=first)).status_code == 201
    more = [*first[1:], {"device_id": f"{prefix}-9", "kind": "traffic", "district": "gate"}]

    conflict = await client.post("/api/v1/devices/bulk", json=more)
    assert conflict.status_code == 409
    assert conflict.json()["detail"]["ids"] == [f"{prefix}-1", f"{prefix}-2"]
    assert (await client.get(f"/api/v1/devices/{prefix}-9")).status_code == 404

    skipped = await client.post("/api/v1/devices/bulk", json=more, params={"skip_existing": True})
    assert skipped.status_code == 201
    assert skipped.json()["skipped"] == [f"{prefix}-1", f"{prefix}-2"]
    assert [d["device_id"] for d in skipped.json()["created"]] == [f"{prefix}-9"]


async def test_other_media_types_and_empty_lists_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/devices/bulk", content=b"<devices/>", headers={"Content-Type": "application/xml"}
    )
    assert response.status_code == 415
    assert (await client.post("/api/v1/devices/bulk", json=[])).status_code == 422
    assert (await client.post("/api/v1/devices/bulk", json={"device_id": "x"})).status_code == 422
