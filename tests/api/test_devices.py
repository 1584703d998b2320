"""The device registry: create, list with filters, get, patch, disable, bulk create."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx


def new_device(device_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device_id": device_id,
        "kind": "air",
        "district": "gate",
        "location": {"lat": 43.35, "lon": 77.05},
        "metadata": {"model": "AQ-7", "floor": 2},
    }
    return {**body, **overrides}


async def test_create_then_get(client: httpx.AsyncClient, unique: str) -> None:
    device_id = f"api-{unique}-a"
    response = await client.post("/api/v1/devices", json=new_device(device_id))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["device_id"] == device_id
    assert created["kind"] == "air"
    assert created["district"] == "gate"
    assert created["location"] == {"lat": 43.35, "lon": 77.05}
    assert created["metadata"] == {"model": "AQ-7", "floor": 2}
    assert created["enabled"] is True
    assert created["status"] == "unknown"
    assert created["last_seen"] is None
    assert created["created_at"]
    # The broker login is issued with the device and shown only in this answer.
    login = created.pop("mqtt")
    assert login["username"] == device_id
    assert login["topic_prefix"] == f"alatau/air/{device_id}/"
    assert len(login["password"]) >= 32

    response = await client.get(f"/api/v1/devices/{device_id}")
    assert response.status_code == 200
    assert response.json() == created
    assert "mqtt" not in response.json()


async def test_create_without_location(client: httpx.AsyncClient, unique: str) -> None:
    body = new_device(f"api-{unique}-noloc")
    del body["location"]
    response = await client.post("/api/v1/devices", json=body)
    assert response.status_code == 201
    assert response.json()["location"] is None


async def test_an_existing_id_is_409(client: httpx.AsyncClient, unique: str) -> None:
    device_id = f"api-{unique}-dup"
    assert (await client.post("/api/v1/devices", json=new_device(device_id))).status_code == 201
    response = await client.post(
        "/api/v1/devices", json=new_device(device_id, kind="traffic", district="green")
    )
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "device_exists"
    assert device_id in body["detail"]
    # The first registration is untouched.
    assert (await client.get(f"/api/v1/devices/{device_id}")).json()["kind"] == "air"


async def test_invalid_bodies_are_422(client: httpx.AsyncClient, unique: str) -> None:
    for body in (
        new_device("bad id with spaces"),
        new_device(f"api-{unique}-x", kind="water"),
        new_device(f"api-{unique}-x", location={"lat": 91, "lon": 0}),
        {**new_device(f"api-{unique}-x"), "colour": "red"},
    ):
        response = await client.post("/api/v1/devices", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "validation_error"


async def test_unknown_device_is_404(client: httpx.AsyncClient, unique: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method, f"/api/v1/devices/ghost-{unique}", json={} if method == "PATCH" else None
        )
        assert response.status_code == 404, method
        assert response.json() == {
            "error": "device_not_found",
            "detail": f"no device 'ghost-{unique}'",
        }


async def test_list_filters_and_pages(client: httpx.AsyncClient, unique: str) -> None:
    specs = [
        ("a", "air", "gate", True),
        ("b", "air", "green", True),
        ("c", "traffic", "gate", True),
        ("d", "traffic", "gate", False),
        ("e", "energy", "golden", True),
    ]
    for suffix, kind, district, enabled in specs:
        body = new_device(f"lst-{unique}-{suffix}", kind=kind, district=district, enabled=enabled)
        assert (await client.post("/api/v1/devices", json=body)).status_code == 201

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/api/v1/devices", params={"limit": 10_000, **params})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] >= len(body["items"])
        return [d["device_id"] for d in body["items"] if d["device_id"].startswith(f"lst-{unique}")]

    assert await ids() == [f"lst-{unique}-{s}" for s in "abcde"]
    assert await ids(kind="traffic") == [f"lst-{unique}-c", f"lst-{unique}-d"]
    assert await ids(kind="traffic", enabled="false") == [f"lst-{unique}-d"]
    assert await ids(district="gate", enabled="true") == [f"lst-{unique}-a", f"lst-{unique}-c"]
    assert await ids(kind="energy", district="golden") == [f"lst-{unique}-e"]

    # Pages cover the whole filtered set once, in id order, and total counts all of it.
    first = (await client.get("/api/v1/devices", params={"kind": "traffic", "limit": 1})).json()
    assert first["limit"] == 1
    assert first["offset"] == 0
    assert len(first["items"]) == 1
    seen: list[str] = []
    for offset in range(first["total"]):
        page = (
            await client.get(
                "/api/v1/devices", params={"kind": "traffic", "limit": 1, "offset": offset}
            )
        ).json()
        assert page["total"] >= first["total"]
        seen.extend(d["device_id"] for d in page["items"])
    assert seen == sorted(seen)
    assert {f"lst-{unique}-c", f"lst-{unique}-d"} <= set(seen)


async def test_list_uses_the_default_page_size_and_refuses_above_the_maximum(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/api/v1/devices")).json()
    assert body["limit"] == 1000
    response = await client.get("/api/v1/devices", params={"limit": 10_001})
    assert response.status_code == 422
    assert response.json()["error"] == "limit_too_large"


async def test_patch_changes_only_what_is_sent(client: httpx.AsyncClient, unique: str) -> None:
    device_id = f"api-{unique}-p"
    await client.post("/api/v1/devices", json=new_device(device_id))
    url = f"/api/v1/devices/{device_id}"

    response = await client.patch(url, json={"district": "green"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["district"] == "green"
    assert body["location"] == {"lat": 43.35, "lon": 77.05}
    assert body["metadata"] == {"model": "AQ-7", "floor": 2}

    body = (await client.patch(url, json={"metadata": {"model": "AQ-8"}, "location": None})).json()
    assert body["metadata"] == {"model": "AQ-8"}
    assert body["location"] is None
    assert body["district"] == "green"

    body = (await client.patch(url, json={"location": {"lat": 43.2, "lon": 76.9}})).json()
    assert body["location"] == {"lat": 43.2, "lon": 76.9}
    body = (await client.patch(url, json={"enabled": False})).json()
    assert body["enabled"] is False
    assert (await client.get(url)).json() == body

    for bad in ({"district": None}, {"kind": "traffic"}, {"enabled": None}, {"district": "x"}):
        response = await client.patch(url, json=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"] == "validation_error"


async def test_delete_disables_and_keeps_the_device(client: httpx.AsyncClient, unique: str) -> None:
    device_id = f"api-{unique}-del"
    await client.post("/api/v1/devices", json=new_device(device_id))
    response = await client.delete(f"/api/v1/devices/{device_id}")
    assert response.status_code == 200
    assert response.json()["enabled"] is False
    fetched = (await client.get(f"/api/v1/devices/{device_id}")).json()
    assert fetched["enabled"] is False
    assert fetched["metadata"] == {"model": "AQ-7", "floor": 2}


async def test_search_matches_id_district_and_name_with_the_other_filters(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, unique: str
) -> None:
    rows = [
        (f"srch-{unique}-a", "air", "green", {"name": f"Abay Avenue {unique}"}),
        (f"srch-{unique}-b", "traffic", "green", {}),
        (f"srch-{unique}-c", "traffic", "gate", {"name": "Kapchagay road"}),
    ]
    await db_pool.executemany(
        "INSERT INTO devices (device_id, kind, district, metadata) VALUES ($1, $2, $3, $4)", rows
    )

    async def found(**params: Any) -> list[str]:
        response = await client.get("/api/v1/devices", params={"limit": 500, **params})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] >= len(page["items"])
        return [d["device_id"] for d in page["items"] if d["device_id"].startswith("srch-")]

    ids = [row[0] for row in rows]
    assert await found(q=f"SRCH-{unique}") == ids
    assert await found(q=f"abay avenue {unique}") == ids[:1]
    assert await found(q=f"{unique}-B") == ids[1:2]
    assert await found(q=f"srch-{unique}", kind="traffic") == ids[1:]
    assert await found(q=f"srch-{unique}", district="gate") == ids[2:]
    # LIKE's wildcards are plain characters in a search.
    assert await found(q=f"srch-{unique}%") == []
    assert await found(q=f"srch_{unique}") == []
    total = (await client.get("/api/v1/devices", params={"q": f"srch-{unique}", "limit": 1})).json()
    assert total["total"] == 3
    assert len(total["items"]) == 1
    empty = await client.get("/api/v1/devices", params={"q": ""})
    assert empty.status_code == 422
