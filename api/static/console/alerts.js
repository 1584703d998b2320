// Alerts: the unresolved ones live (SSE /alerts/live), acknowledgement with an optional note
// (operator and admin), and the history of resolved alerts.
import { api } from "./api.js";
import { h, notify, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { elapsed, number, unit, when, zoneLabel } from "./format.js";
import { refused } from "./actions.js";
import { describe, loadRules, rules } from "./rules.js";
import { alerts, can, onAlerts, storeAlert, unitOf } from "./store.js";

const HISTORY_LIMIT = 200;

function deviceLink(id) {
  const link = h("a", { href: `#/device/${encodeURIComponent(id)}` });
  link.append(raw(id));
  return link;
}

function valueCell(alert) {
  const rule = rules.get(alert.rule_id);
  if (alert.value === null || alert.value === undefined) return "–";
  return raw(`${number(alert.value)} ${rule?.metric ? unit(unitOf(rule.metric)) : ""}`.trim());
}

function ruleCell(alert) {
  const rule = rules.get(alert.rule_id);
  // The API's ``message`` is English: the rule's own fields say the same in the chosen language.
  return h("td", {}, raw(alert.rule_name, "b"), h("br"),
    rule ? h("small", {}, describe(rule)) : raw(alert.message, "small"));
}

function stateCell(alert) {
  const parts = [h("span", { dataset: { field: "state" } }, t(`alert.state.${alert.state}`))];
  if (alert.acknowledged_by) {
    parts.push(h("br"), h("small", {}, t("alert.acknowledged_by")), " ", raw(alert.acknowledged_by, "small"),
      " ", raw(when(alert.acknowledged_at, "time"), "small"));
  }
  if (alert.note) parts.push(h("br"), raw(alert.note, "q", { class: "note", dataset: { field: "note" } }));
  if (alert.state !== "resolved" && alert.cleared_at) {
    parts.push(h("br"), h("small", { dataset: { field: "clearing" } },
      t("alert.clearing", { time: when(alert.cleared_at, "time") })));
  }
  if (alert.state === "resolved" && alert.resolution) parts.push(h("br"), endedCell(alert));
  return h("td", {}, parts);
}

// How the alert ended, in the chosen language (the API's ``resolution`` is English).
function endedCell(alert) {
  const rule = rules.get(alert.rule_id);
  const text = alert.resolution === "the device was disabled" ? t("alert.ended.disabled")
    : rule ? t("alert.ended.cleared", { window: elapsed(rule.window_s) }) : alert.resolution;
  return h("small", { dataset: { field: "ended" } }, text);
}

export function render(root) {
  const rows = h("tbody", { id: "open-alerts" });
  const historyRows = h("tbody", { id: "alert-history" });
  const count = h("small", { "aria-live": "polite" });
  const refresh = h("button", { type: "button" }, t("alert.history_refresh"));
  const openHead = ["opened", "severity", "device", "rule", "value", "state", "actions"];
  const historyHead = ["opened", "resolved", "lasted", "severity", "device", "rule", "value", "acknowledged"];
  replace(root, h("h2", {}, t("nav.alerts")),
    h("section", { class: "panel", "aria-labelledby": "open-title" },
      h("h2", { id: "open-title" }, t("alert.unresolved"), count, h("small", {}, zoneLabel())),
      h("table", { class: "grid alerts" }, h("thead", {}, h("tr", {}, openHead.map((c) =>
        h("th", { scope: "col" }, t(`alert.col.${c}`))))), rows)),
    h("section", { class: "panel", "aria-labelledby": "history-title" },
      h("h2", { id: "history-title" }, t("alert.history"), refresh),
      h("table", { class: "grid alerts" }, h("thead", {}, h("tr", {}, historyHead.map((c) =>
        h("th", { scope: "col" }, t(`alert.col.${c}`))))), historyRows)));
  const noting = new Map(); // alert id -> the note form being written

  function ackForm(alert) {
    const note = h("textarea", { name: "note", rows: 2, maxlength: 1000 });
    const confirm = h("button", { type: "submit", class: "primary" }, t("alert.confirm"));
    const cancel = h("button", { type: "button" }, t("alert.cancel"));
    const form = h("form", { class: "ack-form" }, h("label", {}, t("alert.note_optional"), note),
      confirm, cancel);
    cancel.addEventListener("click", () => { noting.delete(alert.alert_id); draw(); });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      confirm.disabled = true;
      const text = note.value.trim();
      try {
        const updated = await api.post(`/alerts/${alert.alert_id}/acknowledge`, text ? { note: text } : {});
        noting.delete(alert.alert_id);
        storeAlert(updated);
        notify(t("alert.acknowledged"), { kind: "info" });
      } catch (err) {
        confirm.disabled = false;
        refused(t("alert.acknowledge"), err);
      }
    });
    noting.set(alert.alert_id, form);
    return form;
  }

  function row(alert) {
    const action = h("td", { class: "row-actions" });
    if (alert.state === "open" && can("operator")) {
      const button = h("button", { type: "button", dataset: { ack: alert.alert_id } }, t("alert.acknowledge"));
      button.addEventListener("click", () => {
        replace(action, ackForm(alert));
        action.querySelector("textarea").focus();
      });
      action.append(noting.get(alert.alert_id) || button);
    }
    return h("tr", { dataset: { alertId: alert.alert_id, state: alert.state }, class: `alert-${alert.state}` },
      h("td", {}, raw(when(alert.opened_at, "datetime"))),
      h("td", { class: `sev-${alert.severity}` }, t(`severity.${alert.severity}`)),
      h("td", {}, deviceLink(alert.device_id)), ruleCell(alert), h("td", { class: "num" }, valueCell(alert)),
      stateCell(alert), action);
  }

  function draw() {
    const open = [...alerts.values()].filter((alert) => alert.state !== "resolved")
      .sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at));
    replace(count, t("alert.count", { count: open.length, n: number(open.length) }));
    replace(rows, open.length ? open.map(row)
      : h("tr", {}, h("td", { colspan: openHead.length, class: "muted" }, t("alert.none"))));
  }

  async function history() {
    try {
      const list = await api.get("/alerts", { state: "resolved", limit: HISTORY_LIMIT });
      replace(historyRows, list.items.length ? list.items.map((alert) => h("tr", { dataset: { alertId: alert.alert_id } },
        h("td", {}, raw(when(alert.opened_at, "datetime"))),
        h("td", {}, raw(when(alert.resolved_at, "datetime"))),
        h("td", {}, elapsed((Date.parse(alert.resolved_at) - Date.parse(alert.opened_at)) / 1000)),
        h("td", { class: `sev-${alert.severity}` }, t(`severity.${alert.severity}`)),
        h("td", {}, deviceLink(alert.device_id)), ruleCell(alert), h("td", { class: "num" }, valueCell(alert)),
        stateCell(alert)))
        : h("tr", {}, h("td", { colspan: historyHead.length, class: "muted" }, t("alert.no_history"))));
    } catch (err) {
      refused(t("alert.history"), err);
    }
  }

  refresh.addEventListener("click", history);
  const stop = onAlerts((alert) => {
    draw();
    if (alert && alert.state === "resolved") history();
  });
  loadRules().catch((err) => refused(t("rule.load"), err)).finally(() => { draw(); history(); });
  draw();
  return { destroy() { stop(); } };
}
