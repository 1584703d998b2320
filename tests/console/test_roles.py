"""Roles in the page: a reader changes nothing, an operator also acknowledges, an admin also
edits rules and devices (the API refuses the rest anyway; the page does not offer it)."""

from __future__ import annotations

import asyncpg

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import District, Kind, status_topic
from ingest.app import RunningIngest
from tests.console.conftest import OpenConsole, expect
from tests.support import eventually, publish, register

# What each role may press: acknowledge, new rule, rule edits, device changes, commissioning.
ALLOWED = {
    Role.READER: (False, False, False, False),
    Role.OPERATOR: (True, False, False, False),
    Role.ADMIN: (True, True, True, True),
}


async def test_each_role_sees_only_the_actions_it_may_take(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    unique: str,
    open_console: OpenConsole,
) -> None:
    meter = f"roles-meter-{unique}"
    await register(db_pool, meter, Kind.ENERGY, District.GOLDEN)
    await publish(settings, [(status_topic(Kind.ENERGY, meter), b"offline")])
    await eventually(
        lambda: db_pool.fetchval("SELECT count(*) FROM alerts WHERE device_id = $1", meter),
        lambda n: n == 1,
    )
    for role, (acknowledge, new_rule, edit_rules, change_devices) in ALLOWED.items():
        page = await open_console(role, "#/alerts")
        await expect(page.locator("#whoami .role")).to_have_text(role.value)
        row = page.locator("#open-alerts tr", has_text=meter)
        await expect(row).to_have_count(1)
        await expect(row.get_by_role("button", name="Acknowledge")).to_have_count(int(acknowledge))

        await page.evaluate("() => { location.hash = '#/rules'; }")
        await expect(page.locator("#rules tbody tr").first).to_be_visible()
        await expect(page.get_by_role("button", name="New rule")).to_have_count(int(new_rule))
        rules = await page.locator("#rules tbody tr").count()
        await expect(page.locator("#rules tbody button")).to_have_count(3 * rules * edit_rules)

        await page.evaluate(f"() => {{ location.hash = '#/device/{meter}'; }}")
        await expect(page.locator(".facts")).to_contain_text("Golden")
        await expect(page.locator(".actions button")).to_have_count(2 if change_devices else 0)

        await page.evaluate("() => { location.hash = '#/devices'; }")
        await expect(page.locator("#device-table tbody tr").first).to_be_visible()
        devices = await page.locator("#device-table tbody tr").count()
        await expect(page.locator("#device-table tbody button")).to_have_count(
            2 * devices * change_devices
        )
        await expect(page.locator("#commission-title")).to_have_count(int(change_devices))
        await page.context.close()
