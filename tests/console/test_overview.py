"""Overview: districts as areas with every sensor inside its own, status colours with a legend,
and KPI tiles whose figures are the API's summaries, labelled with unit and window."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import District, Kind, status_topic, telemetry_topic
from ingest.app import RunningIngest
from tests.console.conftest import OpenConsole, expect, screenshot
from tests.support import eventually, publish

FIGURE_LABELS = {
    "aqi": "AQI (24 h)",
    "congestion": "Congestion (15 min)",
    "speed": "Speed, km/h (15 min)",
    "vehicles": "Traffic flow, vehicles/h (1 h)",
    "load": "Load, kW (15 min)",
    "consumption": "Consumption, kWh (since 00:00)",
}
FIELDS = {
    "aqi": ("air", "aqi"),
    "congestion": ("traffic", "congestion"),
    "speed": ("traffic", "avg_speed_kmh"),
    "vehicles": ("traffic", "vehicles_per_hour"),
    "load": ("energy", "load_kw"),
    "consumption": ("energy", "consumption_today_kwh"),
}


async def register_at(
    pool: asyncpg.Pool, device_id: str, kind: Kind, district: District, where: Any
) -> None:
    lat, lon = where if where is not None else (None, None)
    await pool.execute(
        "INSERT INTO devices (device_id, kind, district, lat, lon) VALUES ($1, $2, $3, $4, $5)",
        device_id,
        kind.value,
        district.value,
        lat,
        lon,
    )


async def fleet(settings: Settings, pool: asyncpg.Pool, unique: str) -> dict[str, str]:
    """Per district: an air sensor without a location, a meter whose location lies in another
    district, a road sensor at its district's centre; all reporting now."""
    centres = {
        District.GATE: (43.845, 77.035),
        District.GOLDEN: (43.800, 77.095),
        District.GROWING: (43.780, 76.935),
        District.GREEN: (43.925, 77.170),
    }
    now = datetime.now(UTC)
    messages: list[tuple[str, bytes]] = []
    districts: dict[str, str] = {}
    for district, centre in centres.items():
        elsewhere = centres[District.GREEN if district is not District.GREEN else District.GATE]
        for kind, where, values in (
            (Kind.AIR, None, {"pm2_5": 12.0, "pm10": 30.0}),
            (Kind.ENERGY, elsewhere, {"power_kw": 50_000.0, "energy_kwh": 180_990.0}),
            (Kind.TRAFFIC, centre, {"avg_speed_kmh": 35.0, "vehicle_count": 9, "interval_s": 60}),
        ):
            device_id = f"ov-{district.value}-{kind.value}-{unique}"
            await register_at(pool, device_id, kind, district, where)
            districts[device_id] = district.value
            for minutes in (3, 1):
                ts = (now - timedelta(minutes=minutes)).isoformat()
                payload = orjson.dumps({"ts": ts, **values})
                messages.append((telemetry_topic(kind, device_id), payload))
    await publish(settings, messages)
    return districts


def shown_number(text: str) -> float:
    return float(text.replace(",", "").replace("%", ""))


async def test_tiles_show_the_api_summaries_with_unit_and_window(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    devices = await fleet(settings, db_pool, unique)
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        some = next(iter(devices))
        await eventually(
            lambda: client.get(f"/api/v1/devices/{some}/readings"),
            lambda response: len(response.json()["items"]) == 2,
        )
        page = await open_console(Role.READER, "#/overview")
        city = page.locator('.tile[data-district="city"]')
        await expect(page.locator(".tile")).to_have_count(5)
        for area in ("city", "gate", "golden", "growing", "green"):
            tile = page.locator(f'.tile[data-district="{area}"]')
            at = await tile.get_attribute("data-at")
            path = "/api/v1/city/summary" if area == "city" else f"/api/v1/districts/{area}/summary"
            summary = (await client.get(path, params={"at": at})).json()
            for figure, (section, field) in FIELDS.items():
                cell = tile.locator(f'[data-figure="{figure}"]')
                await expect(cell.locator(".kpi-label")).to_have_text(FIGURE_LABELS[figure])
                value = summary[section][field]
                shown = cell.locator(f'[data-kpi="{figure}"]')
                if value is None:
                    await expect(shown).to_have_text("\u2013")
                    continue
                assert float(await shown.get_attribute("data-value")) == value, (area, figure)
                text = await shown.inner_text()
                expected = value * 100 if figure == "congestion" else value
                assert abs(shown_number(text) - expected) <= max(0.51, abs(expected) * 0.0051), (
                    area,
                    figure,
                    text,
                    value,
                )
            if area != "city":
                assert summary["energy"]["load_kw"] >= 50_000.0
        # Hundreds of megawatts keep their thousands separators.
        load = await city.locator('[data-kpi="load"]').inner_text()
        assert re.fullmatch(r"\d{1,3}(,\d{3})+", load), load
        await expect(city.locator("footer")).to_contain_text("(Almaty, UTC+5)")

        await page.locator('.tile[data-district="golden"]').click()
        await expect(page).to_have_url(re.compile(r"#/district/golden$"))
        heading = page.locator("main > h2")
        await expect(heading).to_contain_text("Golden")
        await expect(heading.locator("small")).to_have_text("education and health")


async def test_sensors_lie_inside_their_district_and_are_coloured_by_status(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    api_keys: dict[Role, str],
    open_console: OpenConsole,
) -> None:
    devices = await fleet(settings, db_pool, unique)
    offline = f"ov-gate-energy-{unique}"
    await publish(settings, [(status_topic(Kind.ENERGY, offline), b"offline")])
    await eventually(
        lambda: db_pool.fetchval("SELECT status FROM devices WHERE device_id = $1", offline),
        lambda status: status == "offline",
    )
    # As `make run` prints it: the key in the fragment, which the page then hides.
    page = await open_console(Role.READER, f"#key={api_keys[Role.OPERATOR]}", key="")
    await expect(page.locator("#whoami")).to_have_text("test-operator operator")
    assert "key=" not in page.url
    await page.wait_for_function(
        "ids => ids.every(id => window.__plan && window.__plan.markers.has(id))",
        arg=list(devices),
    )
    placed = await page.evaluate(
        """async (ids) => {
          const geometry = await import('/static/console/geometry.js');
          return ids.map(id => {
            const entry = window.__plan.markers.get(id);
            return [id, entry.district, entry.placed, entry.status,
              geometry.inside(entry.point, geometry.AREAS[entry.district]),
              entry.marker.options.fillColor];
          });
        }""",
        list(devices),
    )
    colours = await page.evaluate(
        "async () => (await import('/static/console/plan.js')).STATUS_COLOURS"
    )
    for device_id, district, was_placed, status, inside, colour in placed:
        assert district == devices[device_id]
        assert inside, device_id
        # Without a location, or with one in another district, the console places it itself.
        assert was_placed == ("-traffic-" not in device_id), device_id
        assert colour == colours[status]
    statuses = {row[0]: row[3] for row in placed}
    assert statuses[offline] == "offline"
    assert statuses[f"ov-gate-air-{unique}"] == "online"
    legend = page.locator(".plan-panel .legend li")
    await expect(legend).to_have_count(5)
    await expect(legend.first).to_contain_text("online")
    swatch = legend.nth(2).locator(".swatch")
    assert colours["offline"].lower() in (await swatch.get_attribute("style") or "").lower()
    await expect(page.locator(".tile")).to_have_count(5)
    await screenshot(page, "console-overview.png")


async def test_each_figure_shows_the_apis_window_and_coverage(
    live_url: str, admin_headers: dict[str, str], open_console: OpenConsole
) -> None:
    page = await open_console(Role.READER, "#/overview")
    tile = page.locator('.tile[data-district="gate"]')
    # The city summary covers every device the session registered: allow it time to answer.
    await expect(tile).to_have_count(1, timeout=20_000)
    at = await tile.get_attribute("data-at")
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        summary = (await client.get("/api/v1/districts/gate/summary", params={"at": at})).json()
    for figure, (section, field) in FIELDS.items():
        span = summary[section]["windows"][field]
        coverage = tile.locator(f'[data-figure="{figure}"] .coverage')
        if span["coverage"] is None:
            await expect(coverage).to_have_count(0)
            continue
        # The tile shows the API's own coverage of the figure's own window, nothing computed.
        assert float(await coverage.get_attribute("data-coverage")) == span["coverage"], figure
        await expect(coverage).to_have_text(re.compile(r"^coverage \d+(\.\d)?%$"))

    # The AQI's window is its dominant pollutant's: a summary whose AQI comes from 1 h of NO2
    # half covered says so.
    async def one_hour_aqi(route: Any) -> None:
        response = await route.fetch()
        body = await response.json()
        for area in (body, *body["districts"]):
            area["air"]["windows"]["aqi"] |= {"seconds": 3600.0, "coverage": 0.5}
        await route.fulfill(response=response, json=body)

    await page.route("**/api/v1/city/summary", one_hour_aqi)
    await page.reload()
    aqi = page.locator('.tile[data-district="gate"] [data-figure="aqi"]')
    await expect(aqi.locator(".kpi-label")).to_have_text("AQI (1 h)")
    await expect(aqi.locator(".coverage")).to_have_text("coverage 50%")
    await page.unroute("**/api/v1/city/summary")
    await page.reload()
    await expect(aqi.locator(".kpi-label")).to_have_text("AQI (24 h)")
