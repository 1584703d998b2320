// One device: its registry entry, its newest values (live), its history and, for an admin,
// enable/disable and a new broker password.
import { api, detailText } from "./api.js";
import { h, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { number, unit, when } from "./format.js";
import { createHistory } from "./history.js";
import { PRIMARY } from "./area.js";
import { rotateCredentials, setEnabled } from "./actions.js";
import { STATUS_COLOURS } from "./plan.js";
import { can, devices, latest, onReading, session, statusOf, unitOf } from "./store.js";

function values(reading) {
  if (!reading) return h("p", { class: "muted" }, t("device.no_reading"));
  return h("table", { class: "grid values" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("device.metric")),
      h("th", { scope: "col" }, t("device.value")), h("th", { scope: "col" }, t("device.unit")))),
    h("tbody", {}, Object.entries(reading.values).filter(([, value]) => value !== null)
      .map(([metric, value]) => h("tr", { dataset: { metric } },
        h("td", {}, t(`metric.${metric}`)), h("td", { class: "num" }, raw(number(value))),
        h("td", {}, unit(unitOf(metric)))))),
    h("caption", {}, t("device.reading_at", { time: when(reading.ts, "full") })));
}

export function render(root, { params }) {
  const id = params[0];
  const error = h("p", { class: "inline-error", role: "alert", hidden: true });
  const facts = h("dl", { class: "facts" });
  const actions = h("div", { class: "actions" });
  const latestBox = h("div", { class: "latest" });
  const historyBox = h("div", { class: "history" });
  replace(root,
    h("nav", { class: "crumbs", "aria-label": t("nav.crumbs") },
      h("a", { href: "#/devices" }, t("nav.devices")), " › ", raw(id, "span", { "aria-current": "page" })),
    h("h2", {}, raw(id)), error,
    h("div", { class: "device-top" },
      h("section", { class: "panel" }, h("h3", {}, t("device.registry")), facts, actions),
      h("section", { class: "panel" }, h("h3", {}, t("device.latest")), latestBox)),
    h("section", { class: "panel", "aria-labelledby": "device-history" },
      h("h2", { id: "device-history" }, t("area.history")), historyBox));
  let history = null;
  let device = null;

  function showFacts() {
    const status = statusOf(device);
    const location = device.location ? `${number(device.location.lat, 5)}, ${number(device.location.lon, 5)}` : null;
    replace(facts,
      h("dt", {}, t("devices.col.kind")), h("dd", {}, t(`kind.${device.kind}`)),
      h("dt", {}, t("devices.col.district")),
      h("dd", {}, h("a", { href: `#/district/${device.district}` }, t(`district.${device.district}`))),
      h("dt", {}, t("devices.col.status")),
      h("dd", { dataset: { field: "status" } }, h("span", { class: "swatch", style: `background:${STATUS_COLOURS[status]}` }),
        t(`status.${status}`)),
      h("dt", {}, t("devices.col.enabled")), h("dd", {}, t(device.enabled ? "common.yes" : "common.no")),
      h("dt", {}, t("devices.col.last_seen")),
      h("dd", {}, device.last_seen ? raw(when(device.last_seen, "full")) : t("devices.never")),
      h("dt", {}, t("device.location")), h("dd", {}, location ? raw(location) : t("device.no_location")),
      h("dt", {}, t("device.metadata")), h("dd", {}, raw(JSON.stringify(device.metadata), "code")));
    replace(actions);
    if (!can("admin")) return;
    const toggle = h("button", { type: "button", dataset: { action: "toggle" } },
      t(device.enabled ? "devices.disable" : "devices.enable"));
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      const updated = await setEnabled(device, !device.enabled);
      if (updated) device = updated;
      showFacts();
    });
    const rotate = h("button", { type: "button", dataset: { action: "rotate" } }, t("devices.rotate"));
    rotate.addEventListener("click", () => rotateCredentials(device));
    actions.append(toggle, rotate);
  }

  async function load() {
    try {
      device = await api.get(`/devices/${encodeURIComponent(id)}`);
      devices.set(id, device);
    } catch (err) {
      replace(error, h("span", {}, t("device.load_failed")), " ", raw(detailText(err.detail)));
      error.hidden = false;
      return;
    }
    showFacts();
    const metrics = Object.keys(session.contract[device.kind] || {});
    history = createHistory(historyBox, { type: "device", id,
      finestS: device.metadata.expected_interval_s || 60 }, metrics, { metric: PRIMARY[device.kind] });
    if (!latest.has(id)) {
      try {
        const reading = await api.get(`/devices/${encodeURIComponent(id)}/latest`);
        replace(latestBox, values(reading));
      } catch (err) {
        replace(latestBox, values(null));
      }
    } else {
      replace(latestBox, values(latest.get(id)));
    }
  }

  const stop = onReading((reading) => {
    if (reading.device_id === id) replace(latestBox, values(reading));
  });
  load();
  return { destroy() { stop(); if (history) history.destroy(); } };
}
