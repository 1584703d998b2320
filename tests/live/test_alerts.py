"""Alerts against the real pipeline: a threshold sustained for its window opens an alert, an
operator acknowledges it, readings back to normal resolve it; Last Will opens an offline alert."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from api.alerts.schemas import MAX_WINDOW_S
from api.alerts.service import evaluate
from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key
from core.config import Settings
from devices.contract import District, Kind, status_topic, telemetry_topic
from ingest.app import RunningIngest
from tests.live.sse import SseClient
from tests.support import bearer, eventually, publish, register

PM25_RULE = "PM2.5 above 75 µg/m³ for 15 minutes"


def air(minutes_ago: float, pm2_5: float) -> tuple[str, bytes]:
    ts = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return "air", orjson.dumps({"ts": ts.isoformat(), "pm2_5": pm2_5})


async def alerts_of(client: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/alerts", params={"device_id": device_id})
    assert response.status_code == 200
    return list(response.json()["items"])


async def next_alert(feed: SseClient, device_id: str, timeout_s: float = 15) -> dict[str, Any]:
    """The next change of the device's alerts on the feed (heartbeats skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        event = await feed.next_event(timeout_s=timeout_s)
        if event.event == "alert" and event.json()["device_id"] == device_id:
            return dict(event.json())
    raise TimeoutError(f"no alert change for {device_id} in {timeout_s} s")


async def test_an_alert_opens_after_its_window_is_acknowledged_and_resolves(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    reader_key: str,
    admin_headers: dict[str, str],
) -> None:
    device = f"smog-{unique}"
    topic = telemetry_topic(Kind.AIR, device)
    await register(db_pool, device, Kind.AIR, District.GROWING)
    feed = await SseClient.open(f"{live_url}/api/v1/alerts/live?access_token={reader_key}")
    assert (await feed.next_event()).event == "snapshot"
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        # Ten minutes above the threshold: not yet sustained for fifteen.
        await publish(settings, [(topic, air(m, 120.0)[1]) for m in (10, 6, 3, 1)])
        stored = await eventually(
            lambda: db_pool.fetchval(
                "SELECT count(*) FROM air_readings WHERE device_id = $1", device
            ),
            lambda count: count == 4,
        )
        assert stored == 4
        # An evaluation after those were stored must leave the device alone. Proof that one has
        # run: a device over the threshold for twenty minutes, sent only now, gets its alert.
        sentinel = f"smog-sentinel-{unique}"
        await register(db_pool, sentinel, Kind.AIR, District.GROWING)
        sustained = [(telemetry_topic(Kind.AIR, sentinel), air(m, 120.0)[1]) for m in (20, 10, 0)]
        await publish(settings, sustained)
        assert (await next_alert(feed, sentinel))["rule_name"] == PM25_RULE
        assert await alerts_of(client, device) == []

        # A late reading seventeen minutes back makes the streak long enough.
        await publish(settings, [(topic, air(17, 90.0)[1])])
        opened = await next_alert(feed, device)
        assert opened["state"] == "open"
        assert opened["rule_name"] == PM25_RULE
        assert opened["severity"] == "critical"
        assert opened["value"] == 120.0
        alert_id = opened["alert_id"]

        # Acknowledged in the name of the operator's key; a reader may not.
        operator = await operator_key(db_pool, "operator-aigerim")
        path = f"/api/v1/alerts/{alert_id}/acknowledge"
        refused = await client.post(path, headers=bearer(reader_key))
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_role"
        note = "crew sent to the Growing depot"
        ack = await client.post(path, headers=bearer(operator), json={"note": f"  {note} "})
        assert ack.status_code == 200, ack.text
        assert ack.json()["state"] == "acknowledged"
        assert ack.json()["acknowledged_by"] == "operator-aigerim"
        assert ack.json()["acknowledged_at"] is not None
        assert ack.json()["note"] == note
        assert (await next_alert(feed, device))["state"] == "acknowledged"
        again = await client.post(path, headers=bearer(operator))
        assert again.status_code == 409
        assert again.json()["error"] == "alert_not_open"

        # Back to normal: seen cleared at once, resolved only once it stays so for the window.
        await publish(settings, [(topic, air(0, 12.0)[1])])
        cleared = await next_alert(feed, device)
        assert (cleared["state"], cleared["resolution"]) == ("acknowledged", None)
        assert cleared["cleared_at"] is not None
        # The window (15 min) is what the evaluator waits for: move the clearing back by it.
        await db_pool.execute(
            "UPDATE alerts SET cleared_at = cleared_at - interval '15 minutes' WHERE alert_id = $1",
            alert_id,
        )
        resolved = await next_alert(feed, device)
        assert resolved["state"] == "resolved"
        assert resolved["resolved_at"] is not None
        assert resolved["resolution"] == (
            "resolved: pm2_5 has not been above 75 for 900 s (now 12)"
        )
        history = await alerts_of(client, device)
    await feed.close()
    assert [(a["alert_id"], a["state"], a["note"]) for a in history] == [
        (alert_id, "resolved", note)
    ]


async def test_an_alert_whose_condition_returns_before_its_window_stays_unresolved(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
) -> None:
    device = f"smog-back-{unique}"
    topic = telemetry_topic(Kind.AIR, device)
    await register(db_pool, device, Kind.AIR, District.GREEN)
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        await publish(settings, [(topic, air(m, 150.0)[1]) for m in (30, 20, 10)])
        [opened] = await eventually(lambda: alerts_of(client, device), bool)
        await publish(settings, [(topic, air(5, 10.0)[1])])
        await eventually(
            lambda: alerts_of(client, device), lambda items: items[0]["cleared_at"] is not None
        )
        # Above again before the window passed: the clearing starts over.
        await publish(settings, [(topic, air(2, 140.0)[1])])
        items = await eventually(
            lambda: alerts_of(client, device), lambda items: items[0]["cleared_at"] is None
        )
    assert [(a["alert_id"], a["state"], a["cleared_at"]) for a in items] == [
        (opened["alert_id"], "open", None)
    ]


async def test_rules_are_managed_over_the_api_and_a_traffic_rule_fires(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
) -> None:
    device = f"jam-{unique}"
    await register(db_pool, device, Kind.TRAFFIC, District.GATE)
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        defaults = (await client.get("/api/v1/alert-rules")).json()["items"]
        names = {rule["name"] for rule in defaults}
        assert {PM25_RULE, "Speed under 15 km/h for 10 minutes"} <= names
        assert any(rule["condition"] == "offline" for rule in defaults)

        bad = await client.post(
            "/api/v1/alert-rules",
            json={"name": f"bad {unique}", "condition": "above", "kind": "air", "window_s": 60},
        )
        assert bad.status_code == 422
        assert bad.json()["error"] == "validation_error"
        created = await client.post(
            "/api/v1/alert-rules",
            json={
                "name": f"slow {unique}",
                "condition": "below",
                "kind": "traffic",
                "metric": "avg_speed_kmh",
                "threshold": 15,
                "window_s": 60,
                "device_id": device,
            },
        )
        assert created.status_code == 201, created.text
        rule_id = created.json()["rule_id"]
        duplicate = await client.post("/api/v1/alert-rules", json=created.json() | {"rule_id": 1})
        assert duplicate.status_code == 422  # rule_id is not a field of a new rule

        now = datetime.now(UTC)
        await publish(
            settings,
            [
                (
                    telemetry_topic(Kind.TRAFFIC, device),
                    orjson.dumps(
                        {"ts": (now - timedelta(seconds=s)).isoformat(), "avg_speed_kmh": 8.0}
                    ),
                )
                for s in (70, 30, 0)
            ],
        )
        fired = await eventually(
            lambda: alerts_of(client, device),
            lambda items: any(a["rule_id"] == rule_id for a in items),
        )
        assert [a["message"] for a in fired if a["rule_id"] == rule_id] == [
            "avg_speed_kmh below 15 for 60 s (now 8)"
        ]
        patched = await client.patch(f"/api/v1/alert-rules/{rule_id}", json={"enabled": False})
        assert patched.status_code == 200
        assert patched.json()["enabled"] is False
        assert (await client.delete(f"/api/v1/alert-rules/{rule_id}")).status_code == 204
        assert (await client.delete(f"/api/v1/alert-rules/{rule_id}")).status_code == 404


async def test_last_will_offline_opens_an_offline_alert(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
) -> None:
    device = f"will-{unique}"
    await register(db_pool, device, Kind.ENERGY, District.GOLDEN)
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        await publish(settings, [(status_topic(Kind.ENERGY, device), b"offline")])
        items = await eventually(lambda: alerts_of(client, device), bool)
        assert [a["state"] for a in items] == ["open"]
        assert items[0]["message"].startswith("no reading for 300 s")
        await publish(settings, [(status_topic(Kind.ENERGY, device), b"online")])
        items = await eventually(
            lambda: alerts_of(client, device), lambda items: items[0]["cleared_at"] is not None
        )
        assert [a["state"] for a in items] == ["open"]
        await db_pool.execute(
            "UPDATE alerts SET cleared_at = cleared_at - interval '300 seconds'"
            " WHERE alert_id = $1",
            items[0]["alert_id"],
        )
        items = await eventually(
            lambda: alerts_of(client, device), lambda items: items[0]["state"] == "resolved"
        )
        assert [a["state"] for a in items] == ["resolved"]
        assert items[0]["resolution"] == ("resolved: the device has been reporting again for 300 s")


async def test_a_device_that_never_reports_is_offline_and_its_alert_ends_when_disabled(
    db_pool: asyncpg.Pool, live_url: str, unique: str, admin_headers: dict[str, str]
) -> None:
    device = f"mute-{unique}"
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        created = await client.post(
            "/api/v1/devices", json={"device_id": device, "kind": "air", "district": "gate"}
        )
        assert created.status_code == 201, created.text
        # Commissioned ten minutes ago (the offline rule waits five), never heard from since.
        await db_pool.execute(
            "UPDATE devices SET created_at = now() - interval '10 minutes' WHERE device_id = $1",
            device,
        )
        [opened] = await eventually(lambda: alerts_of(client, device), bool)
        assert opened["rule_name"] == "Device offline for 5 minutes"
        assert opened["message"] == "no reading since it was commissioned, over 300 s ago"
        path = f"/api/v1/alerts/{opened['alert_id']}/acknowledge"
        ack = await client.post(path, json={"note": "installer will check the mast"})
        assert ack.status_code == 200, ack.text
        # Disabled: its acknowledged alert is over, whatever its window.
        assert (await client.delete(f"/api/v1/devices/{device}")).status_code == 200
        items = await eventually(
            lambda: alerts_of(client, device), lambda items: items[0]["state"] == "resolved"
        )
    assert [(a["alert_id"], a["state"], a["resolution"], a["note"]) for a in items] == [
        (
            opened["alert_id"],
            "resolved",
            "the device was disabled",
            "installer will check the mast",
        )
    ]


async def operator_key(pool: asyncpg.Pool, name: str) -> str:
    body = ApiKeyCreate(name=name, role=Role.OPERATOR)
    return (await issue_key(pool, body, created_by=None)).token


async def test_a_window_beyond_a_year_is_refused_and_a_stored_one_stops_no_other_rule(
    db_pool: asyncpg.Pool, live_url: str, unique: str, admin_headers: dict[str, str]
) -> None:
    rule = {"name": f"forever {unique}", "condition": "offline", "window_s": 1e300}
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        refused = await client.post("/api/v1/alert-rules", json=rule)
        assert refused.status_code == 422, refused.text
        year = await client.post("/api/v1/alert-rules", json=rule | {"window_s": MAX_WINDOW_S})
        assert year.status_code == 201, year.text
        rule_id = year.json()["rule_id"]
        patched = await client.patch(f"/api/v1/alert-rules/{rule_id}", json={"window_s": 1e300})
        assert patched.status_code == 422, patched.text
        # A row written before the bound existed (or by hand) is skipped, not fatal.
        await db_pool.execute("UPDATE alert_rules SET window_s = 1e300 WHERE rule_id = $1", rule_id)
        try:
            # None while another replica's evaluator holds the lock: try until this one runs.
            evaluation = await eventually(lambda: evaluate(db_pool), lambda done: done is not None)
            assert evaluation is not None
        finally:
            assert (await client.delete(f"/api/v1/alert-rules/{rule_id}")).status_code == 204
