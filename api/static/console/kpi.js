// KPI tiles: every figure is read from the API's summaries (GET /city/summary,
// /districts/{d}/summary); the page never computes a KPI itself. Each figure carries its unit and
// its window (from the API's `windows`) and how much of that window the data covers.
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { duration, number, percent, unit, when, zoneLabel } from "./format.js";
import { devices, statusOf } from "./store.js";

// Each section of a summary carries `windows`, keyed by the figure's field: the span the figure
// describes (`seconds`) and the share of it the stored readings cover (`coverage`, 0..1). The
// windows below only label a figure the API sent no window for.
export const FIGURES = [
  { key: "aqi", section: "air", field: "aqi", window: 86400, digits: 0 },
  { key: "congestion", section: "traffic", field: "congestion", window: 900, percent: true },
  { key: "speed", section: "traffic", field: "avg_speed_kmh", window: 900, unit: "km/h" },
  { key: "vehicles", section: "traffic", field: "vehicles_per_hour", window: 3600, unit: "vehicles/h", digits: 0 },
  { key: "load", section: "energy", field: "load_kw", window: 900, unit: "kW" },
  { key: "consumption", section: "energy", field: "consumption_today_kwh", window: "today", unit: "kWh" },
];

/** A figure's window in words: a length ("24 h"), or "since 00:00" for today's figures. */
function windowText(figure, window) {
  if (figure.window === "today") return t("kpi.window.today");
  const seconds = window && typeof window.seconds === "number" ? window.seconds : figure.window;
  return duration(Math.round(seconds));
}

function coverageText(window) {
  const coverage = window ? window.coverage : null;
  if (coverage === null || coverage === undefined) return null;
  return t("kpi.coverage", { value: percent(coverage, coverage < 0.1 ? 1 : 0) });
}

function figureLabel(figure, window) {
  const name = t(`kpi.${figure.key}`);
  const span = windowText(figure, window);
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
    const span = (section.windows || {})[figure.field] || null;
    const coverage = coverageText(span);
    return h("div", { class: "kpi", dataset: { figure: figure.key } },
      h("span", { class: "kpi-label" }, figureLabel(figure, span)),
      h("b", { "data-raw": "", dataset: { kpi: figure.key, value: value ?? "" } },
        figureValue(figure, value)),
      figure.key === "aqi" && section.category ? h("small", { class: `aqi-${section.category}` },
        t(`aqi.${section.category}`)) : null,
      figure.key === "aqi" && section.dominant ? h("small", {},
        t("kpi.dominant", { pollutant: t(`metric.${section.dominant}`) })) : null,
      coverage ? h("small", { class: "coverage", dataset: { coverage: span.coverage } },
        coverage) : null);
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
