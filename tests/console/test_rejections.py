"""Rejected readings: filtered by reason and device, the payload in monospace, cut short with a
button to show it whole; the page's list of reasons is ingest's."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx
import orjson

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import District, Kind, telemetry_topic
from ingest.app import RunningIngest
from ingest.schemas import Reason
from tests.console.conftest import OpenConsole, expect, screenshot
from tests.support import eventually, publish, register


async def test_rejections_are_filtered_and_their_payload_expands(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    sensor = f"rej-air-{unique}"
    await register(db_pool, sensor, Kind.AIR, District.GOLDEN)
    now = datetime.now(UTC).isoformat()
    topic = telemetry_topic(Kind.AIR, sensor)
    long_payload = orjson.dumps({"ts": now, "pm2_5": 9000.0, "note": "x" * 300})
    await publish(
        settings,
        [
            (topic, b'{"ts": "' + now.encode() + b'", "pm2_5": 12'),  # cut short
            (topic, orjson.dumps({"ts": now, "pm2_5": 9000.0})),
            (topic, long_payload),
        ],
    )
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        response = await eventually(
            lambda: client.get("/api/v1/ingest/rejections", params={"device_id": sensor}),
            lambda response: len(response.json()["items"]) == 3,
        )
    stored = response.json()["items"]
    page = await open_console(Role.READER, "#/rejections")
    await page.get_by_label("Device id").fill(sensor)
    await page.get_by_role("button", name="Show", exact=True).click()
    rows = page.locator("#rejections tr")
    await expect(rows).to_have_count(3)
    await expect(page.locator(".panel > p.muted")).to_have_text("3 rejected readings, newest first")
    for row, item in zip(await rows.all(), stored, strict=True):
        await expect(row).to_have_attribute("data-reason", item["reason"])
        await expect(row.locator("td").nth(4)).to_have_text(item["topic"])
        await expect(row.locator("td").nth(3)).to_have_text(item["detail"])
        # Received time in Almaty: the API's UTC time plus five hours.
        received = datetime.fromisoformat(item["received_at"]).astimezone(UTC)
        await expect(row.locator("td").first).to_contain_text(
            f"{(received.hour + 5) % 24:02d}:{received.minute:02d}:{received.second:02d}"
        )

    await page.get_by_label("Reason").select_option("invalid_json")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("not JSON")
    await expect(rows.first.locator("code.payload")).to_have_text(
        '{"ts": "' + now + '", "pm2_5": 12'
    )

    # An unknown field is refused too: the long payload is cut, then shown whole on request.
    await page.get_by_label("Reason").select_option("unknown_field")
    await expect(rows).to_have_count(1)
    payload = rows.first.locator("code.payload")
    text = long_payload.decode()
    await expect(payload).to_have_text(text[:120] + "…")
    font = await payload.evaluate("el => getComputedStyle(el).fontFamily")
    assert "mono" in font.lower()
    toggle = rows.first.get_by_role("button", name=f"Show all ({len(text)} characters)")
    await toggle.click()
    await expect(payload).to_have_text(text)
    await expect(rows.first.get_by_role("button", name="Show less")).to_have_attribute(
        "aria-expanded", "true"
    )
    await screenshot(page, "console-rejections.png")


async def test_the_reason_list_is_ingests(open_console: OpenConsole) -> None:
    page = await open_console(Role.READER, "#/rejections")
    reasons = await page.evaluate(
        "async () => (await import('/static/console/rejections.js')).REASONS"
    )
    assert reasons == [reason.value for reason in Reason]
    options = page.get_by_label("Reason").locator("option")
    await expect(options).to_have_count(len(Reason) + 1)
