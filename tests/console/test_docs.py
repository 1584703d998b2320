"""/docs renders from the project's own files: with every request off this machine refused, the
operations list still appears."""

from __future__ import annotations

from typing import Any

import httpx

from tests.console.conftest import CHROMIUM_FLAGS, Offline, expect, screenshot


async def test_the_openapi_page_needs_no_internet(browser: Any, live_url: str) -> None:
    async with httpx.AsyncClient(base_url=live_url) as client:
        html = (await client.get("/docs")).text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert f"/static/vendor/swagger-ui/{asset}" in html
            assert (await client.get(f"/static/vendor/swagger-ui/{asset}")).status_code == 200
        assert (await client.get("/redoc")).status_code == 404
    assert CHROMIUM_FLAGS  # the same browser as the console's tests
    offline = Offline()
    context = await browser.new_context()
    try:
        await context.route("**/*", offline.route)
        page = await context.new_page()
        await page.goto(f"{live_url}/docs")
        operations = page.locator(".opblock")
        await expect(operations.first).to_be_visible(timeout=15_000)
        assert await operations.count() > 20
        summary = page.locator(".opblock-summary-path", has_text="/api/v1/city/summary")
        await expect(summary).to_have_count(1)
        await screenshot(page, "docs-offline.png")
    finally:
        await context.close()
    assert offline.blocked == []
