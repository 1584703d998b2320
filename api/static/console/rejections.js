// Refused readings (GET /ingest/rejections): filter by reason, device and time; the payload as
// it arrived, in monospace, cut short with a button to show it whole.
import { api } from "./api.js";
import { h, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { fromAlmatyInput, number, when, zoneLabel } from "./format.js";
import { refused } from "./actions.js";

// The reasons of README "Why a reading is refused" (ingest.schemas.Reason); the API has no list
// of them. tests/console/test_rejections.py keeps the two equal.
export const REASONS = [
  "payload_too_large", "not_utf8", "invalid_json", "not_an_object", "empty_batch",
  "batch_too_large", "invalid_topic", "unknown_field", "missing_field", "invalid_timestamp",
  "wrong_type", "out_of_range", "no_metrics", "future_timestamp", "too_old", "unknown_device",
  "device_disabled", "kind_mismatch", "invalid_status", "storage_error", "topic_denied",
  "conflicting_duplicate",
];
const SHORT = 120;

function payloadCell(item) {
  const text = item.payload_base64 ? item.payload_base64 : item.payload;
  const code = raw(text.length > SHORT ? text.slice(0, SHORT) + "…" : text, "code", { class: "payload" });
  const cell = h("td", { class: "payload-cell" }, item.payload_base64 ? h("small", {}, t("rejections.base64")) : null, code);
  if (text.length > SHORT) {
    const toggle = h("button", { type: "button", class: "ghost", "aria-expanded": "false" },
      t("rejections.expand", { n: number(text.length) }));
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      code.textContent = open ? text : text.slice(0, SHORT) + "…";
      code.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", String(open));
      toggle.textContent = open ? t("rejections.collapse") : t("rejections.expand", { n: number(text.length) });
    });
    cell.append(toggle);
  }
  return cell;
}

export function render(root) {
  const reason = h("select", { name: "reason" }, h("option", { value: "" }, t("rejections.any_reason")),
    REASONS.map((code) => h("option", { value: code }, t(`reason.${code}`))));
  const device = h("input", { name: "device_id", type: "search", autocomplete: "off" });
  const from = h("input", { name: "from", type: "datetime-local" });
  const to = h("input", { name: "to", type: "datetime-local" });
  const limit = h("select", { name: "limit" }, [50, 200, 1000].map((n) => h("option", { value: n }, raw(number(n)))));
  const form = h("form", { class: "filters" },
    h("label", {}, t("rejections.reason"), reason), h("label", {}, t("rejections.device"), device),
    h("label", {}, t("rejections.from"), from), h("label", {}, t("rejections.to"), to),
    h("label", {}, t("rejections.limit"), limit), h("span", { class: "muted" }, zoneLabel()),
    h("button", { type: "submit", class: "primary" }, t("rejections.apply")));
  const rows = h("tbody", { id: "rejections" });
  const counter = h("p", { class: "muted", "aria-live": "polite" });
  const heads = ["received", "device", "reason", "detail", "topic", "payload"];
  replace(root, h("h2", {}, t("nav.rejections")),
    h("section", { class: "panel" }, form, counter,
      h("table", { class: "grid rejections" }, h("thead", {}, h("tr", {}, heads.map((c) =>
        h("th", { scope: "col" }, t(`rejections.col.${c}`))))), rows)));

  async function load() {
    const params = { reason: reason.value, device_id: device.value.trim(), limit: limit.value };
    const start = fromAlmatyInput(from.value), end = fromAlmatyInput(to.value);
    if (start !== null) params.from = new Date(start).toISOString();
    if (end !== null) params.to = new Date(end).toISOString();
    let list;
    try {
      list = await api.get("/ingest/rejections", params);
    } catch (err) {
      refused(t("rejections.load"), err);
      return;
    }
    replace(counter, t("rejections.count", { count: list.items.length, n: number(list.items.length) }));
    replace(rows, list.items.map((item) => h("tr", { dataset: { reason: item.reason } },
      h("td", {}, raw(when(item.received_at, "full"))),
      h("td", {}, item.device_id ? raw(item.device_id) : "–"),
      h("td", {}, h("span", {}, t(`reason.${item.reason}`)), h("br"), raw(item.reason, "code")),
      h("td", {}, raw(item.detail)), h("td", {}, raw(item.topic, "code")), payloadCell(item))));
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  reason.addEventListener("change", load);
  load();
  return { destroy() {} };
}
