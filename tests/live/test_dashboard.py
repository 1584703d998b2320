"""The operator dashboard in headless Debian Chromium (driven by Playwright, which downloads no
browser) against the real stack: live values change, an alert is acknowledged, a screenshot."""

from __future__ import annotations

import math
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from api.keys.schemas import ApiKeyCreate, Role
from api.keys.service import issue_key
from core.config import Settings
from devices.contract import District, Kind, status_topic, telemetry_topic
from ingest.app import RunningIngest
from tests.live.sse import SseClient
from tests.support import eventually, publish, register

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(
        not (ROOT / "api/static/vendor/uplot/uPlot.iife.min.js").exists(),
        reason="front-end libraries not installed (cd frontend && npm ci && npm run build)",
    ),
]


# dashboard.js's tile: the US EPA AQI of the mean newest PM2.5 of the district's air sensors.
AQI_BREAKPOINTS = (
    (0, 9, 0, 50),
    (9.1, 35.4, 51, 100),
    (35.5, 55.4, 101, 150),
    (55.5, 125.4, 151, 200),
    (125.5, 225.4, 201, 300),
    (225.5, 325.4, 301, 500),
)


def air(pm2_5: float) -> bytes:
    return orjson.dumps({"ts": datetime.now(UTC).isoformat(), "pm2_5": pm2_5})


def tile_aqi(pm2_5: list[float]) -> str:
    """What the district tile shows for these readings (summed in the page's order)."""
    mean = sum(pm2_5) / len(pm2_5)
    for low, high, index_low, index_high in AQI_BREAKPOINTS:
        if mean <= high:
            scaled = (index_high - index_low) / (high - low) * (max(mean, low) - low) + index_low
            return str(math.floor(scaled + 0.5))  # JavaScript's Math.round
    return "500"


async def expected_gate_aqi(live_url: str, key: str, sensor: str, value: float) -> str:
    """The gate tile's AQI from the replica's own snapshot, once it holds ``value`` for
    ``sensor``: the page starts from that snapshot and keeps its order (newest change last)."""

    async def snapshot() -> list[dict[str, Any]]:
        feed = await SseClient.open(f"{live_url}/api/v1/live?access_token={key}&district=gate")
        try:
            return list((await feed.next_event()).json()["items"])
        finally:
            await feed.close()

    items = await eventually(
        snapshot,
        lambda found: any(
            i["device_id"] == sensor and i["values"]["pm2_5"] == value for i in found
        ),
    )
    return tile_aqi(
        [
            i["values"]["pm2_5"]
            for i in items
            if i["kind"] == "air" and i["values"]["pm2_5"] is not None
        ]
    )


async def test_the_dashboard_shows_live_values_and_acknowledges_an_alert(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    reader_key: str,
) -> None:
    sensor, meter = f"dash-air-{unique}", f"dash-meter-{unique}"
    await register(db_pool, sensor, Kind.AIR, District.GATE)
    await register(db_pool, meter, Kind.ENERGY, District.GREEN)
    road = f"dash-road-{unique}"
    await register(db_pool, road, Kind.TRAFFIC, District.GOLDEN)
    now = datetime.now(UTC).isoformat()
    await publish(
        settings,
        [
            (telemetry_topic(Kind.AIR, sensor), air(11.5)),
            (telemetry_topic(Kind.ENERGY, meter), orjson.dumps({"ts": now, "power_kw": 420.0})),
            (telemetry_topic(Kind.TRAFFIC, road), orjson.dumps({"ts": now, "avg_speed_kmh": 21.0})),
        ],
    )
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda error: errors.append(str(error)))
            # As `make run` prints it: the key in the fragment, which the page then hides.
            operator = await issue_key(
                db_pool, ApiKeyCreate(name="operator-dana", role=Role.OPERATOR), created_by=None
            )
            await page.goto(f"{live_url}/?device={sensor}#key={operator.token}")
            await playwright_api.expect(page.locator("#whoami")).to_have_text(
                "operator-dana (operator)"
            )
            assert "key=" not in page.url
            value = page.get_by_test_id("chart-value")
            await playwright_api.expect(page.locator("#connection")).to_have_text("live")
            await playwright_api.expect(value).to_have_text("11.5")

            # Live values change as readings arrive. Other tests' devices share the districts, so
            # the tile is checked against the replica's snapshot, which the page started from.
            gate_aqi = page.locator('.tile[data-district="gate"] [data-kpi="aqi"]')
            before = await expected_gate_aqi(live_url, reader_key, sensor, 11.5)
            await playwright_api.expect(gate_aqi).to_have_text(before)
            await publish(settings, [(telemetry_topic(Kind.AIR, sensor), air(257.5))])
            await playwright_api.expect(value).to_have_text("257.5")
            after = await expected_gate_aqi(live_url, reader_key, sensor, 257.5)
            assert after != before
            await playwright_api.expect(gate_aqi).to_have_text(after)
            golden = page.locator('.tile[data-district="golden"] [data-kpi="congestion"]')
            await playwright_api.expect(golden).to_have_text(re.compile(r"^\d+%$"))
            green = page.locator('.tile[data-district="green"] [data-kpi="load"]')
            await playwright_api.expect(green).to_have_text(re.compile(r"^-?[\d.]+ [kM]W$"))

            # The meter's Last Will opens an offline alert; the operator acknowledges it.
            await publish(settings, [(status_topic(Kind.ENERGY, meter), b"offline")])
            row = page.locator("#alerts tr", has_text=meter)
            await playwright_api.expect(row).to_have_count(1, timeout=15_000)
            await row.get_by_role("button", name="Acknowledge").click()
            await playwright_api.expect(row.locator('[data-field="state"]')).to_have_text(
                "acknowledged by operator-dana"
            )
            # The picture shows the meter offline in the device table too.
            meter_status = page.locator(f'#devices tr[data-device="{meter}"] .status-offline')
            await playwright_api.expect(meter_status).to_have_count(1)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
    assert errors == []
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        items = await eventually(
            lambda: client.get("/api/v1/alerts", params={"device_id": meter}),
            lambda response: response.status_code == 200,
        )
    [alert] = items.json()["items"]
    assert alert["state"] == "acknowledged"
    assert alert["acknowledged_by"] == "operator-dana"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
