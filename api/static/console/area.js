// A district's view (or the city's): its KPIs, its part of the plan, its devices and the history
// of each kind over the district.
import { api, detailText } from "./api.js";
import { h, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { number, unit, when } from "./format.js";
import { kpiTile } from "./kpi.js";
import { createPlan, STATUS_COLOURS, statusLegend } from "./plan.js";
import { createHistory } from "./history.js";
import { devices, latest, loadDevices, onReading, session, statusOf, unitOf } from "./store.js";

// The metric each kind's chart and device table open on.
export const PRIMARY = { air: "pm2_5", traffic: "avg_speed_kmh", energy: "energy_kwh" };
const LIVE_VALUE = { air: "pm2_5", traffic: "avg_speed_kmh", energy: "power_kw" };

export function deviceRow(device, go) {
  const status = statusOf(device);
  const reading = latest.get(device.device_id);
  const metric = LIVE_VALUE[device.kind];
  const value = reading ? reading.values[metric] : null;
  const seen = reading ? reading.received_at : device.last_seen;
  const link = h("a", { href: `#/device/${encodeURIComponent(device.device_id)}` });
  link.append(raw(device.device_id));
  return h("tr", { dataset: { device: device.device_id, status } },
    h("td", {}, link), h("td", {}, t(`kind.${device.kind}`)),
    h("td", {}, t(`district.${device.district}`)),
    h("td", {}, h("span", { class: "swatch", style: `background:${STATUS_COLOURS[status]}`, "aria-hidden": "true" }),
      h("span", { dataset: { field: "status" } }, t(`status.${status}`))),
    h("td", {}, value === null || value === undefined ? "–"
      : [h("span", {}, t(`metric.${metric}`)), " ", raw(`${number(value)} ${unit(unitOf(metric))}`.trim(), "b")]),
    h("td", {}, seen ? raw(when(seen, "seconds")) : h("span", { class: "muted" }, t("devices.never"))));
}

export function deviceHead() {
  return h("thead", {}, h("tr", {}, ["device", "kind", "district", "status", "latest", "last_seen"]
    .map((column) => h("th", { scope: "col" }, t(`devices.col.${column}`)))));
}

export function render(root, { go, params }) {
  const district = params[0] || null; // null: the whole city
  const area = district || "city";
  const tile = h("div", { class: "area-tile" });
  const error = h("p", { class: "inline-error", role: "alert", hidden: true });
  const planBox = h("div", { class: "plan plan-small" });
  const rows = h("tbody");
  const histories = h("div", { class: "histories" });
  replace(root,
    h("nav", { class: "crumbs", "aria-label": t("nav.crumbs") },
      h("a", { href: "#/overview" }, t("nav.overview")), " › ",
      h("span", { "aria-current": "page" }, t(`district.${area}`))),
    h("h2", {}, t(`district.${area}`), h("small", {}, t(`district.${area}.about`))),
    error,
    h("div", { class: "area-top" }, tile,
      district ? h("section", { class: "panel" }, planBox, statusLegend()) : null),
    h("section", { class: "panel", "aria-labelledby": "history-title" },
      h("h2", { id: "history-title" }, t("area.history")), histories),
    district ? h("section", { class: "panel", "aria-labelledby": "area-devices" },
      h("h2", { id: "area-devices" }, t("area.devices")),
      h("table", { class: "grid" }, deviceHead(), rows)) : null);

  const scope = { type: district ? "district" : "city", id: district, finestS: 60 };
  const charts = Object.entries(PRIMARY).map(([kind, metric]) => {
    const box = h("div", { class: "history", dataset: { kind } });
    histories.append(box);
    return createHistory(box, scope, Object.keys(session.contract[kind] || {}),
      { metric, title: t(`kind.${kind}`) });
  });
  const plan = district ? createPlan(planBox, { only: district,
    onDevice: (id) => go(`#/device/${encodeURIComponent(id)}`) }) : null;

  async function summary() {
    try {
      const data = await api.get(district ? `/districts/${district}/summary` : "/city/summary");
      replace(tile, kpiTile(data));
      error.hidden = true;
    } catch (err) {
      replace(error, h("span", {}, t("overview.summary_failed")), " ", raw(detailText(err.detail)));
      error.hidden = false;
    }
  }
  function table() {
    if (!district) return;
    replace(rows, [...devices.values()].filter((device) => device.district === district)
      .sort((a, b) => a.device_id.localeCompare(b.device_id)).map((device) => deviceRow(device, go)));
    if (plan) plan.update();
  }

  summary();
  loadDevices().then(table).catch((err) => {
    replace(error, h("span", {}, t("devices.load_failed")), " ", raw(detailText(err.detail)));
    error.hidden = false;
  });
  let dirty = false;
  const stop = onReading((reading) => { if (reading.district === district) dirty = true; });
  const timers = [setInterval(summary, 15000),
    setInterval(() => { if (dirty) { dirty = false; table(); } }, 2000)];
  return {
    destroy() {
      stop();
      for (const timer of timers) clearInterval(timer);
      for (const chart of charts) chart.destroy();
      if (plan) plan.destroy();
    },
  };
}
