// Overview: the city plan with every sensor, and KPI tiles for the city and each district.
import { api, detailText } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { kpiTile } from "./kpi.js";
import { createPlan, statusLegend } from "./plan.js";
import { devices, loadDevices } from "./store.js";

const SUMMARY_REFRESH_MS = 15000;
const PLAN_REFRESH_MS = 2000;
const DEVICES_REFRESH_MS = 30000;

export function render(root, { go }) {
  const tiles = h("section", { class: "tiles", "aria-label": t("overview.tiles") });
  const error = h("p", { class: "inline-error", role: "alert", hidden: true });
  const planBox = h("div", { class: "plan", id: "plan" });
  replace(root,
    h("div", { class: "overview" },
      h("section", { class: "panel plan-panel", "aria-labelledby": "plan-title" },
        h("h2", { id: "plan-title" }, t("overview.plan"), h("small", {}, t("overview.plan_hint"))),
        planBox, statusLegend()),
      h("div", { class: "tiles-column" }, error, tiles)));
  const plan = createPlan(planBox, {
    onDistrict: (name) => go(`#/district/${name}`),
    onDevice: (id) => go(`#/device/${encodeURIComponent(id)}`),
  });

  async function summaries() {
    try {
      const city = await api.get("/city/summary");
      error.hidden = true;
      replace(tiles, kpiTile(city, { onOpen: () => go("#/city") }),
        city.districts.map((summary) => kpiTile(summary,
          { onOpen: () => go(`#/district/${summary.district}`) })));
    } catch (err) {
      replace(error, h("span", {}, t("overview.summary_failed")), " ",
        h("span", { "data-raw": "" }, detailText(err.detail)));
      error.hidden = false;
    }
  }

  async function refreshDevices() {
    try {
      await loadDevices();
      plan.update();
    } catch (err) {
      console.warn(err);
    }
  }

  summaries();
  if (!devices.size) refreshDevices();
  const timers = [
    setInterval(summaries, SUMMARY_REFRESH_MS),
    setInterval(plan.update, PLAN_REFRESH_MS),
    setInterval(refreshDevices, DEVICES_REFRESH_MS),
  ];
  return {
    destroy() {
      for (const timer of timers) clearInterval(timer);
      plan.destroy();
    },
  };
}
