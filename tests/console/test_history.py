"""History charts: the bucket fits the range, the values are the API's aggregates, empty buckets
are drawn as gaps, the value axis is as wide as its labels, the x range is the range chosen,
and short ranges follow new readings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from api.keys.schemas import Role
from core.config import Settings
from devices.contract import District, Kind, telemetry_topic
from ingest.app import RunningIngest
from tests.console.conftest import OpenConsole, expect, screenshot
from tests.support import eventually, publish, register

EXPECTED_BUCKETS = {
    "15m": "1m",
    "1h": "1m",
    "6h": "1m",
    "24h": "5m",
    "7d": "30m",
    "30d": "3h",
    "1y": "1d",
}
CHART = ".history .chart"


async def readings(
    settings: Settings, kind: Kind, device_id: str, minutes_ago: list[float], values: dict[str, Any]
) -> None:
    now = datetime.now(UTC)
    await publish(
        settings,
        [
            (
                telemetry_topic(kind, device_id),
                orjson.dumps({"ts": (now - timedelta(minutes=m)).isoformat(), **values}),
            )
            for m in minutes_ago
        ],
    )


async def stored(pool: asyncpg.Pool, table: str, device_id: str, count: int) -> None:
    await eventually(
        lambda: pool.fetchval(f"SELECT count(*) FROM {table} WHERE device_id = $1", device_id),
        lambda n: n == count,
    )


async def chart_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(
        """sel => { const s = document.querySelector(sel).__chart;
          return { from: s.from, to: s.to, xs: s.data[0], ys: s.data[1], unit: s.unitName,
            xmin: s.plot.scales.x.min, xmax: s.plot.scales.x.max,
            timeLabel: s.plot.axes[0].label, valueLabel: s.plot.axes[1].label }; }""",
        CHART,
    )
    return state


async def loaded(page: Any, bucket: str, span_s: float | None = None) -> dict[str, Any]:
    """The chart's state once it shows ``bucket`` buckets (over ``span_s`` seconds)."""
    await expect(page.locator(".history").first).to_have_attribute("data-bucket", bucket)
    await page.wait_for_function(
        """([sel, span]) => { const s = document.querySelector(sel).__chart;
          return s.plot && s.data[0].length
            && (span === null || Math.abs(s.to - s.from - span) < 1); }""",
        arg=[CHART, span_s],
    )
    return await chart_state(page)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


async def test_a_gap_in_the_readings_is_a_gap_in_the_line(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    live_url: str,
    unique: str,
    admin_headers: dict[str, str],
    open_console: OpenConsole,
) -> None:
    sensor = f"hist-air-{unique}"
    await register(db_pool, sensor, Kind.AIR, District.GATE)
    before, after = [14.5, 14, 13.5, 13, 12.5, 12, 11.5, 11], [4.5, 4, 3.5, 3, 2.5, 2, 1.5]
    await readings(settings, Kind.AIR, sensor, before + after, {"pm2_5": 20.0})
    await stored(db_pool, "air_readings", sensor, len(before + after))
    page = await open_console(Role.READER, f"#/device/{sensor}")
    await page.get_by_role("button", name="15 min").click()
    state = await loaded(page, "1m")
    assert state["timeLabel"] == "Time (Almaty, UTC+5)"
    assert state["valueLabel"] == "µg/m³"
    async with httpx.AsyncClient(base_url=live_url, headers=admin_headers) as client:
        response = await client.get(
            f"/api/v1/devices/{sensor}/aggregates",
            params={
                "metric": "pm2_5",
                "bucket": "1m",
                "fill": "true",
                "from": iso(state["from"]),
                "to": iso(state["to"]),
            },
        )
    items = response.json()["items"]
    assert state["xs"] == [datetime.fromisoformat(i["bucket_start"]).timestamp() for i in items]
    assert state["ys"] == [i["value"] for i in items]
    assert any(i["gap"] for i in items)
    assert state["ys"].count(None) >= 5
    # The line is drawn between readings and broken where the buckets are empty: look for the
    # stroke colour down one pixel column in each place.
    pairs = zip(state["xs"], items, strict=True)
    gap_at = next(x for x, i in pairs if i["gap"] and x > state["xs"][3])
    columns = await page.evaluate(
        """([sel, xs]) => {
          const u = document.querySelector(sel).__chart.plot;
          const ctx = u.ctx, h = ctx.canvas.height;
          return xs.map(x => {
            const px = Math.round(u.valToPos(x, 'x', true));
            const pixels = ctx.getImageData(px, 0, 1, h).data;
            let stroke = 0;
            for (let i = 0; i < pixels.length; i += 4) {
              if (Math.abs(pixels[i] - 88) < 12 && Math.abs(pixels[i + 1] - 166) < 12
                  && Math.abs(pixels[i + 2] - 255) < 12 && pixels[i + 3] > 200) stroke++;
            }
            return stroke;
          });
        }""",
        [CHART, [gap_at + 30, state["xs"][1] + 30]],
    )
    assert columns[0] == 0, "a line crosses the gap"
    assert columns[1] > 0, "no line where there are readings"
    # A new reading appears without touching the page (short ranges follow the clock).
    await readings(settings, Kind.AIR, sensor, [0], {"pm2_5": 77.5})
    await page.wait_for_function(
        "sel => document.querySelector(sel).__chart.data[1].includes(77.5)",
        arg=CHART,
        timeout=15_000,
    )
    await screenshot(page, "console-history-gap.png")


async def test_the_value_axis_fits_its_labels_in_every_language(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    unique: str,
    open_console: OpenConsole,
) -> None:
    meter = f"hist-meter-{unique}"
    await register(db_pool, meter, Kind.ENERGY, District.GROWING)
    await readings(settings, Kind.ENERGY, meter, [9, 6, 3], {"energy_kwh": 180_990.5})
    await stored(db_pool, "energy_readings", meter, 3)
    for language, thousands in (("en", ","), ("ru", "\u00a0"), ("kk", "\u00a0")):
        page = await open_console(Role.READER, f"#/device/{meter}", language=language)
        await page.locator(".history select").nth(1).select_option("avg")
        await loaded(page, "1m")
        await page.wait_for_function(
            "sel => document.querySelector(sel).__chart.data[1].includes(180990.5)", arg=CHART
        )
        axis = await page.evaluate(
            """sel => { const u = document.querySelector(sel).__chart.plot, a = u.axes[1];
              u.ctx.font = a.font[0];
              const widest = Math.max(...a._values.map(v => u.ctx.measureText(v).width));
              return { size: a._size, widest: widest / devicePixelRatio, values: a._values,
                ticks: a.ticks.size + a.gap }; }""",
            CHART,
        )
        assert axis["size"] >= axis["widest"] + axis["ticks"], axis
        pattern = re.compile(rf"^1[78]\d{re.escape(thousands)}\d{{3}}$")
        assert any(pattern.match(v) for v in axis["values"]), axis["values"]
    await screenshot(page, "console-history-axis.png")


async def test_ranges_pick_their_bucket_and_clamp_the_x_axis(
    settings: Settings,
    db_pool: asyncpg.Pool,
    ingest: RunningIngest,
    unique: str,
    open_console: OpenConsole,
) -> None:
    quiet = f"hist-quiet-{unique}"
    await register(db_pool, quiet, Kind.TRAFFIC, District.GREEN)
    await readings(settings, Kind.TRAFFIC, quiet, [120], {"avg_speed_kmh": 40.0})
    await stored(db_pool, "traffic_readings", quiet, 1)
    page = await open_console(Role.READER, f"#/device/{quiet}")
    spans = {
        "15m": 900,
        "1h": 3600,
        "6h": 21600,
        "24h": 86400,
        "7d": 604800,
        "30d": 2592000,
        "1y": 31536000,
    }
    labels = {
        "15m": "15 min",
        "1h": "1 h",
        "6h": "6 h",
        "24h": "24 h",
        "7d": "7 d",
        "30d": "30 d",
        "1y": "1 y",
    }
    for key, bucket in EXPECTED_BUCKETS.items():
        await page.get_by_role("button", name=labels[key], exact=True).click()
        state = await loaded(page, bucket, spans[key])
        # One reading two hours ago must not stretch the axis: it spans exactly the range.
        assert abs(state["to"] - state["from"] - spans[key]) < 1
        assert (state["xmin"], state["xmax"]) == (state["from"], state["to"])
        assert len(state["xs"]) <= 500
    # A custom range is read in Almaty time.
    await page.get_by_role("button", name="Custom…").click()
    almaty = datetime.now(UTC) + timedelta(hours=5)
    start, end = almaty - timedelta(hours=3), almaty - timedelta(hours=1)
    minute = "%Y-%m-%dT%H:%M"
    await page.get_by_label("Start of the range (Almaty time)").fill(start.strftime(minute))
    await page.get_by_label("End of the range (Almaty time)").fill(end.strftime(minute))
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_function(
        "([sel, span]) => Math.abs(document.querySelector(sel).__chart.to"
        " - document.querySelector(sel).__chart.from - span) < 1",
        arg=[CHART, 7200],
    )
    state = await chart_state(page)
    expected = start.replace(second=0, microsecond=0) - timedelta(hours=5)
    assert state["from"] == expected.timestamp()
