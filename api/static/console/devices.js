// The registry: search, filters (kind, district, status, enabled), paging; for an admin,
// enable/disable, a new broker password and commissioning from a CSV file.
import { api, detailText } from "./api.js";
import { h, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { number } from "./format.js";
import { deviceHead, deviceRow } from "./area.js";
import { rotateCredentials, setEnabled } from "./actions.js";
import { commissionPanel } from "./commission.js";
import { statusLegend } from "./plan.js";
import { can, devices } from "./store.js";

const PAGE = 50;

function select(name, values, labelKey) {
  return h("label", {}, t(`devices.filter.${name}`),
    h("select", { name }, h("option", { value: "" }, t("devices.filter.any")),
      values.map((value) => h("option", { value }, t(`${labelKey}.${value}`)))));
}

export function render(root, { go }) {
  const form = h("form", { class: "filters", role: "search" },
    h("label", {}, t("devices.search"), h("input", { type: "search", name: "q",
      placeholder: t("devices.search_hint"), autocomplete: "off" })),
    select("kind", ["air", "traffic", "energy"], "kind"),
    select("district", ["gate", "golden", "growing", "green"], "district"),
    select("status", ["online", "offline", "unknown"], "status"),
    h("label", {}, t("devices.filter.enabled"), h("select", { name: "enabled" },
      h("option", { value: "" }, t("devices.filter.any")),
      h("option", { value: "true" }, t("devices.filter.enabled_only")),
      h("option", { value: "false" }, t("devices.filter.disabled_only")))));
  const rows = h("tbody");
  const counter = h("p", { class: "muted", "aria-live": "polite" });
  const error = h("p", { class: "inline-error", role: "alert", hidden: true });
  const previous = h("button", { type: "button" }, t("devices.previous"));
  const next = h("button", { type: "button" }, t("devices.next"));
  const head = deviceHead();
  if (can("admin")) head.firstChild.append(h("th", { scope: "col" }, t("devices.col.actions")));
  replace(root, h("h2", {}, t("nav.devices")),
    h("section", { class: "panel" }, form, statusLegend(), error, counter,
      h("table", { class: "grid", id: "device-table" }, head, rows),
      h("div", { class: "pager" }, previous, next)),
    can("admin") ? commissionPanel(() => load()) : null);
  let offset = 0;

  function filters() {
    const data = new FormData(form);
    return { q: (data.get("q") || "").trim(), kind: data.get("kind"), district: data.get("district"),
      status: data.get("status"), enabled: data.get("enabled") };
  }

  function actions(device) {
    const toggle = h("button", { type: "button", dataset: { action: "toggle" } },
      t(device.enabled ? "devices.disable" : "devices.enable"));
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      if (await setEnabled(device, !device.enabled)) load();
      else toggle.disabled = false;
    });
    const rotate = h("button", { type: "button", dataset: { action: "rotate" } }, t("devices.rotate"));
    rotate.addEventListener("click", () => rotateCredentials(device));
    return h("td", { class: "row-actions" }, toggle, rotate);
  }

  async function load() {
    let items, total;
    try {
      // The API searches (q: part of the id, the district or metadata.name) and pages.
      const page = await api.get("/devices", { ...filters(), limit: PAGE, offset });
      total = page.total;
      items = page.items;
    } catch (err) {
      replace(error, h("span", {}, t("devices.load_failed")), " ", raw(detailText(err.detail)));
      error.hidden = false;
      return;
    }
    error.hidden = true;
    for (const device of items) devices.set(device.device_id, device);
    replace(rows, items.map((device) => {
      const row = deviceRow(device, go);
      if (can("admin")) row.append(actions(device));
      return row;
    }));
    replace(counter, total ? t("devices.showing", { from: number(offset + 1),
      to: number(offset + items.length), total: number(total), count: total }) : t("devices.none"));
    previous.disabled = offset === 0;
    next.disabled = offset + PAGE >= total;
  }

  let typing = null;
  form.addEventListener("input", (event) => {
    offset = 0;
    clearTimeout(typing);
    typing = setTimeout(load, event.target.name === "q" ? 250 : 0);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; load(); });
  previous.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  next.addEventListener("click", () => { offset += PAGE; load(); });
  load();
  return { destroy() { clearTimeout(typing); } };
}
