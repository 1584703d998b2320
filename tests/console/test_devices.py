"""Devices: search, filters and paging match the API; an admin disables, enables and rotates a
login (shown once) and commissions from CSV, with the API's row errors and taken ids readable."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import asyncpg
import httpx

from api.keys.schemas import Role
from devices.contract import District, Kind
from tests.console.conftest import OpenConsole, expect, screenshot
from tests.support import register


def accept_dialogs(page: Any) -> None:
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))


async def test_search_filters_and_pages_match_the_api(
    db_pool: asyncpg.Pool,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    for number in range(55):
        district = District.GROWING if number % 5 else District.GATE
        await register(db_pool, f"pg-{unique}-{number:02d}", Kind.TRAFFIC, district)
    page = await open_console(Role.READER, "#/devices")
    counter = page.locator(".panel > p.muted").first
    rows = page.locator("#device-table tbody tr")
    await page.get_by_label("Search by id").fill(f"pg-{unique}")
    await expect(counter).to_have_text("1\u201350 of 55")
    await expect(rows).to_have_count(50)
    await page.get_by_role("button", name="Next").click()
    await expect(counter).to_have_text("51\u201355 of 55")
    await expect(rows.first).to_have_attribute("data-device", f"pg-{unique}-50")
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await page.get_by_label("District").select_option("gate")
    await expect(counter).to_have_text("1\u201311 of 11")
    await page.get_by_label("Search by id").fill("")
    await page.get_by_label("Kind").select_option("traffic")
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        answer = (
            await client.get(
                "/api/v1/devices", params={"kind": "traffic", "district": "gate", "limit": 50}
            )
        ).json()
    total = answer["total"]
    await expect(counter).to_have_text(f"1\u2013{min(total, 50)} of {total:,}")
    shown = [await row.get_attribute("data-device") for row in await rows.all()]
    assert shown == [device["device_id"] for device in answer["items"]]
    await expect(rows.first.get_by_role("button")).to_have_count(0)  # a reader changes nothing
    await expect(page.locator("#commission-title")).to_have_count(0)


async def test_an_admin_disables_enables_and_rotates_a_login(
    db_pool: asyncpg.Pool,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        created = await client.post(
            "/api/v1/devices",
            json={"device_id": f"adm-{unique}", "kind": "air", "district": "golden"},
        )
        assert created.status_code == 201
        page = await open_console(Role.ADMIN, "#/devices")
        accept_dialogs(page)
        await page.get_by_label("Search by id").fill(f"adm-{unique}")
        row = page.locator(f'#device-table tr[data-device="adm-{unique}"]')
        await row.get_by_role("button", name="Disable").click()
        await expect(row.locator('[data-field="status"]')).to_have_text("disabled")
        assert (await client.get(f"/api/v1/devices/adm-{unique}")).json()["enabled"] is False
        await row.get_by_role("button", name="Enable").click()
        await expect(row.get_by_role("button", name="Disable")).to_be_visible()
        assert (await client.get(f"/api/v1/devices/adm-{unique}")).json()["enabled"] is True

        async with page.expect_response("**/credentials") as response_info:
            await row.get_by_role("button", name="New password").click()
        login = await (await response_info.value).json()
        dialog = page.get_by_role("dialog")
        await expect(dialog).to_contain_text("This password is shown only now")
        await expect(dialog.locator("[data-secret]")).to_have_text(login["password"])
        await expect(dialog.get_by_role("button", name="Copy")).to_be_visible()
        await screenshot(page, "console-rotated-login.png")
        await dialog.get_by_role("button", name="Close").click()
        await expect(dialog).to_have_count(0)

        # A device removed meanwhile: the refusal carries the API's detail.
        await db_pool.execute("DELETE FROM devices WHERE device_id = $1", f"adm-{unique}")
        await row.get_by_role("button", name="New password").click()
        notice = page.locator(".notice-error").last
        await expect(notice).to_contain_text("New password: refused by the API (404)")
        await expect(notice).to_contain_text(f"adm-{unique}")


async def test_commissioning_from_csv_shows_row_errors_taken_ids_and_new_logins(
    db_pool: asyncpg.Pool,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    await register(db_pool, f"csv-{unique}-taken", Kind.AIR, District.GREEN)
    page = await open_console(Role.ADMIN, "#/devices")
    outcome = page.locator(".commission-outcome")

    async def upload(text: str) -> None:
        await page.get_by_label("CSV file", exact=True).set_input_files(
            {"name": "district.csv", "mimeType": "text/csv", "buffer": text.encode()}
        )
        await page.get_by_role("button", name="Commission").click()

    await upload(f"device_id,kind,district\ncsv-{unique}-a,air,gate\nbad id,air,nowhere\n")
    await expect(outcome).to_contain_text("2 problems in the file; nothing was created.")
    errors = outcome.locator(".row-errors tbody tr")
    await expect(errors).to_have_count(2)
    await expect(errors.first).to_contain_text("3")
    await expect(errors.first).to_contain_text("device_id")
    await expect(errors.nth(1)).to_contain_text("district")

    await upload(
        f"device_id,kind,district\ncsv-{unique}-a,air,gate\ncsv-{unique}-taken,air,green\n"
    )
    await expect(outcome).to_contain_text("1 id is already registered; nothing was created:")
    await expect(outcome.locator(".taken li")).to_have_text([f"csv-{unique}-taken"])

    await upload(
        f"device_id,kind,district,lat,lon\ncsv-{unique}-a,air,gate,43.85,77.03\n"
        f"csv-{unique}-b,energy,golden,,\n"
    )
    await expect(outcome).to_contain_text("2 devices commissioned (0 left as they were).")
    await expect(outcome).to_contain_text("These passwords are shown only now")
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download the logins (CSV)").click()
    download = await download_info.value
    rows = list(csv.DictReader(io.StringIO(open(await download.path()).read())))  # noqa: ASYNC230,SIM115
    assert [row["device_id"] for row in rows] == [f"csv-{unique}-a", f"csv-{unique}-b"]
    shown = await outcome.locator(".logins tbody tr td:nth-child(3)").all_inner_texts()
    assert shown == [row["password"] for row in rows]
    assert all(len(row["password"]) >= 32 for row in rows)
    assert rows[1]["topic_prefix"] == f"alatau/energy/csv-{unique}-b/"
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        device = (await client.get(f"/api/v1/devices/csv-{unique}-a")).json()
    assert device["location"] == {"lat": 43.85, "lon": 77.03}
    await screenshot(page, "console-commission.png")
