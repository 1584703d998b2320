"""Alerts: unresolved ones arrive live, an operator acknowledges with a note, resolved ones go to
the history; the rule editor creates, tunes, disables and deletes rules, and a refusal shows the
API's own words."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import District, Kind, status_topic, telemetry_topic
from ingest.app import RunningIngest
from tests.console.conftest import OpenConsole, expect, screenshot
from tests.support import eventually, publish, register


def accept_dialogs(page: Any) -> None:
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))


async def test_an_alert_arrives_live_is_acknowledged_with_a_note_and_resolves(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    meter = f"alert-meter-{unique}"
    await register(db_pool, meter, Kind.ENERGY, District.GREEN)
    operator = await open_console(Role.OPERATOR, "#/alerts")
    reader = await open_console(Role.READER, "#/alerts")
    await expect(operator.locator("#open-alerts")).to_be_visible()

    # The meter's Last Will opens an offline alert: it appears without a reload.
    await publish(settings, [(status_topic(Kind.ENERGY, meter), b"offline")])
    row = operator.locator("#open-alerts tr", has_text=meter)
    await expect(row).to_have_count(1, timeout=15_000)
    await expect(row.locator('[data-field="state"]')).to_have_text("open")
    await expect(row).to_contain_text("no reading for 5 min, or the device says offline")
    reader_row = reader.locator("#open-alerts tr", has_text=meter)
    await expect(reader_row).to_have_count(1, timeout=15_000)
    await expect(reader_row.get_by_role("button")).to_have_count(0)

    await row.get_by_role("button", name="Acknowledge").click()
    await row.get_by_label("Note (optional)").fill("crew sent to the substation")
    async with operator.expect_request("**/acknowledge") as request_info:
        await row.get_by_role("button", name="Acknowledge").click()
    request = await request_info.value
    assert orjson.loads(request.post_data or "{}") == {"note": "crew sent to the substation"}
    answer = await (await request.response()).json()
    await expect(row.locator('[data-field="state"]')).to_have_text("acknowledged")
    await expect(row).to_contain_text("by test-operator")
    assert answer["note"] == "crew sent to the substation"
    await expect(row.locator('[data-field="note"]')).to_have_text(answer["note"])
    # The reader sees the acknowledgement live, through the feed.
    await expect(reader_row.locator('[data-field="state"]')).to_have_text("acknowledged")
    await screenshot(operator, "console-alerts.png")

    # Back online with a reading: the evaluator resolves it and it moves to the history.
    now = datetime.now(UTC).isoformat()
    await publish(
        settings,
        [
            (status_topic(Kind.ENERGY, meter), b"online"),
            (telemetry_topic(Kind.ENERGY, meter), orjson.dumps({"ts": now, "power_kw": 3.0})),
        ],
    )
    # Cleared now; resolved once it stays cleared for the rule's window (5 min), which the
    # test moves into the past instead of waiting.
    cleared = await eventually(
        lambda: db_pool.fetchval(
            "SELECT cleared_at FROM alerts WHERE device_id = $1 AND state <> 'resolved'", meter
        ),
        lambda at: at is not None,
    )
    assert cleared is not None
    await db_pool.execute(
        "UPDATE alerts SET cleared_at = cleared_at - interval '5 minutes'"
        " WHERE device_id = $1 AND state <> 'resolved'",
        meter,
    )
    await expect(row).to_have_count(0, timeout=15_000)
    history = operator.locator("#alert-history tr", has_text=meter)
    await expect(history).to_have_count(1, timeout=15_000)
    await expect(history).to_contain_text("test-operator")
    await expect(history.locator('[data-field="note"]')).to_have_text(answer["note"])
    await expect(history.locator('[data-field="ended"]')).to_have_text(
        "cleared for 5 min, then resolved"
    )
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        response = await client.get("/api/v1/alerts", params={"device_id": meter})
    [alert] = response.json()["items"]
    assert alert["state"] == "resolved"
    assert alert["acknowledged_by"] == "test-operator"


async def test_an_admin_edits_rules_and_a_refusal_shows_the_apis_detail(
    live_url: str, unique: str, admin_headers: dict[str, str], open_console: OpenConsole
) -> None:
    page = await open_console(Role.ADMIN, "#/rules")
    accept_dialogs(page)
    name = f"Gate PM2.5 {unique}"
    await page.get_by_role("button", name="New rule").click()
    form = page.locator('form.rule-form[data-rule="new"]')
    await form.get_by_label("Name").fill(name)
    await form.get_by_label("Metric").select_option("pm2_5")
    await form.get_by_role("spinbutton", name="Threshold").fill("100")
    await form.get_by_label("For (minutes)").fill("10")
    await form.get_by_label("District").select_option("gate")
    await form.get_by_label("Severity").select_option("critical")
    await form.get_by_role("button", name="Create rule").click()
    row = page.locator("#rules tr", has_text=name)
    await expect(row).to_contain_text("PM2.5 above 100 µg/m³ for 10 min")
    await expect(row).to_contain_text("Gate")

    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:

        async def rule() -> dict[str, Any]:
            rules = (await client.get("/api/v1/alert-rules")).json()["items"]
            return next((r for r in rules if r["name"] == name), {})

        created = await rule()
        assert (created["condition"], created["kind"]) == ("above", "air")
        assert (created["threshold"], created["window_s"]) == (100, 600)
        assert (created["district"], created["severity"]) == ("gate", "critical")

        await row.get_by_role("button", name="Edit").click()
        edit = page.locator(f'form.rule-form[data-rule="{created["rule_id"]}"]')
        await expect(edit.get_by_label("Metric")).to_be_disabled()
        await edit.get_by_role("spinbutton", name="Threshold").fill("120.5")
        await edit.get_by_role("button", name="Save").click()
        await expect(row).to_contain_text("PM2.5 above 120.5 µg/m³ for 10 min")
        assert (await rule())["threshold"] == 120.5

        await row.get_by_role("button", name="Disable").click()
        await expect(row.get_by_role("button", name="Enable")).to_be_visible()
        assert (await rule())["enabled"] is False

        # A second rule of the same name: the API's 409 is shown in its words.
        await page.get_by_role("button", name="New rule").click()
        await form.get_by_label("Name").fill(name)
        await form.get_by_role("spinbutton", name="Threshold").fill("1")
        await form.get_by_role("button", name="Create rule").click()
        notice = page.locator(".notice-error").last
        await expect(notice).to_contain_text("Create rule: refused by the API (409)")
        await expect(notice).to_contain_text(f"a rule named '{name}' exists")
        await form.get_by_role("button", name="Cancel").click()

        await row.get_by_role("button", name="Delete").click()
        await expect(row).to_have_count(0)
        assert await rule() == {}
