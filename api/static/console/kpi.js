// KPI tiles: every figure is read from the API's summaries (GET /city/summary,
// /districts/{d}/summary); the page never computes a KPI itself. Each figure carries its unit and
// its window, and the API's own window and coverage fields when it sends them.
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { duration, number, percent, unit, when, zoneLabel } from "./format.js";
import { devices, statusOf } from "./store.js";

// Windows as the API documents them (README "City KPIs"); an API `window` field overrides them.
export const FIGURES = [
  { key: "aqi", section: "air", field: "aqi", window: 86400, digits: 0 },
  { key: "congestion", section: "traffic", field: "congestion", window: 900, percent: true },
  { key: "speed", section: "traffic", field: "avg_speed_kmh", window: 900, unit: "km/h" },
  { key: "vehicles", section: "traffic", field: "vehicles_per_hour", window: 3600, unit: "vehicles/h", digits: 0 },
  { key: "load", section: "energy", field: "load_kw", window: 900, unit: "kW" },
  { key: "consumption", section: "energy", field: "consumption_today_kwh", window: "today", unit: "kWh" },
];

function seconds(window) {
  if (typeof window === "number") return window;
  if (typeof window !== "string") return null;
  const iso = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/.exec(window);
  if (iso) return (+(iso[1] || 0)) * 86400 + (+(iso[2] || 0)) * 3600 + (+(iso[3] || 0)) * 60 + (+(iso[4] || 0));
  const short = /^(\d+)\s*(s|m|min|h|d)$/.exec(window);
  if (short) return +short[1] * { s: 1, m: 60, min: 60, h: 3600, d: 86400 }[short[2]];
  return null;
}

/** A window in words: a length ("24 h"), "since 00:00" or an API-given span of times. */
function windowText(window) {
  if (window === "today") return t("kpi.window.today");
  const length = window && typeof window === "object"
    ? (window.seconds ?? window.length_s ?? window.duration_s) : seconds(window);
  if (length) return duration(length);
  if (window && typeof window === "object" && (window.from || window.start)) {
    return t("kpi.window.span", { from: when(window.from || window.start, "time"),
      to: when(window.to || window.end, "time") });
  }
  return null;
}

function coverageText(coverage) {
  if (coverage === null || coverage === undefined) return null;
  if (typeof coverage === "number") return t("kpi.coverage", { value: percent(coverage) });
  const reporting = coverage.reporting ?? coverage.devices_reporting ?? coverage.with_data;
  const total = coverage.devices ?? coverage.expected ?? coverage.total;
  if (reporting !== undefined && total !== undefined) {
    return t("kpi.coverage_devices", { reporting: number(reporting), total: number(total) });
  }
  if (coverage.fraction !== undefined) return t("kpi.coverage", { value: percent(coverage.fraction) });
  return null;
}

function figureLabel(figure, window) {
  const name = t(`kpi.${figure.key}`);
  const span = windowText(window) ?? windowText(figure.window);
  return figure.unit ? t("kpi.label_unit", { name, unit: unit(figure.unit), window: span })
    : t("kpi.label", { name, window: span });
}

function figureValue(figure, value) {
  if (value === null || value === undefined) return "–";
  return figure.percent ? percent(value) : number(value, figure.digits);
}

function deviceCounts(district) {
  let total = 0, online = 0;
  for (const device of devices.values()) {
    if (district && device.district !== district) continue;
    total += 1;
    if (statusOf(device) === "online") online += 1;
  }
  return t("kpi.devices", { online: number(online), total: number(total) });
}

/** One tile for an area's summary (``summary.district`` null: the city). */
export function kpiTile(summary, { onOpen = null } = {}) {
  const area = summary.district || "city";
  const figures = FIGURES.map((figure) => {
    const section = summary[figure.section] || {};
    const value = section[figure.field];
    const coverage = coverageText(section.coverage ?? summary.coverage);
    return h("div", { class: "kpi", dataset: { figure: figure.key } },
      h("span", { class: "kpi-label" }, figureLabel(figure, section.window ?? null)),
      h("b", { "data-raw": "", dataset: { kpi: figure.key, value: value ?? "" } },
        figureValue(figure, value)),
      figure.key === "aqi" && section.category ? h("small", { class: `aqi-${section.category}` },
        t(`aqi.${section.category}`)) : null,
      figure.key === "aqi" && section.dominant ? h("small", {},
        t("kpi.dominant", { pollutant: t(`metric.${section.dominant}`) })) : null,
      coverage && figure.key !== "speed" ? h("small", { class: "coverage" }, coverage) : null);
  });
  const title = h("h3", {}, t(`district.${area}`), h("small", {}, t(`district.${area}.about`)));
  const tile = h("article", { class: `tile tile-${area}`, dataset: { district: area, at: summary.at },
    tabindex: onOpen ? "0" : null, role: onOpen ? "link" : null,
    "aria-label": onOpen ? t("kpi.open", { area: t(`district.${area}`) }) : null },
  title, h("div", { class: "kpis" }, figures),
  h("footer", {}, h("span", {}, deviceCounts(summary.district)),
    h("span", {}, t("kpi.as_of", { time: when(summary.at, "time"), zone: zoneLabel(summary.at) }))));
  if (onOpen) {
    tile.addEventListener("click", onOpen);
    tile.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); onOpen(); }
    });
  }
  return tile;
}
