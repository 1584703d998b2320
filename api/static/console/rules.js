// Alert rules: every key reads them; an admin creates, tunes, disables and deletes them.
import { api } from "./api.js";
import { h, notify, raw, replace } from "./dom.js";
import { t } from "./i18n.js";
import { duration, number, unit } from "./format.js";
import { refused } from "./actions.js";
import { can, session, unitOf } from "./store.js";

export const rules = new Map();

export async function loadRules() {
  const list = await api.get("/alert-rules");
  rules.clear();
  for (const rule of list.items) rules.set(rule.rule_id, rule);
  return rules;
}

/** What a rule watches, in words: "PM2.5 above 75 µg/m³ for 15 min". */
export function describe(rule) {
  const window = duration(rule.window_s);
  if (rule.condition === "offline") return t("rule.desc.offline", { window });
  return t(`rule.desc.${rule.condition}`, { metric: t(`metric.${rule.metric}`),
    threshold: number(rule.threshold, 6), unit: unit(unitOf(rule.metric)), window });
}

function scopeText(rule) {
  if (rule.device_id) return raw(rule.device_id, "code");
  if (rule.district) return t(`district.${rule.district}`);
  return t("rule.everywhere");
}

function field(label, control) {
  return h("label", {}, label, control);
}

function options(values, key, { any = false } = {}) {
  return [any ? h("option", { value: "" }, t("rule.any")) : null,
    ...values.map((value) => h("option", { value }, t(`${key}.${value}`)))];
}

/** The create form (every field) or the edit form (what PATCH may change) of a rule. */
function ruleForm(rule, onDone) {
  const editing = rule !== null;
  const name = h("input", { name: "name", required: true, maxlength: 200, value: rule?.name ?? "" });
  const condition = h("select", { name: "condition", disabled: editing }, options(["above", "below", "offline"], "condition"));
  const kind = h("select", { name: "kind", disabled: editing }, options(Object.keys(session.contract), "kind"));
  const metric = h("select", { name: "metric", disabled: editing });
  const threshold = h("input", { name: "threshold", type: "number", step: "any", value: rule?.threshold ?? "" });
  const minutes = h("input", { name: "window", type: "number", min: "0.1", step: "any", required: true,
    value: rule ? rule.window_s / 60 : 15 });
  const district = h("select", { name: "district", disabled: editing },
    options(["gate", "golden", "growing", "green"], "district", { any: true }));
  const device = h("input", { name: "device_id", disabled: editing, value: rule?.device_id ?? "" });
  const severity = h("select", { name: "severity" }, options(["info", "warning", "critical"], "severity"));
  const enabled = h("input", { name: "enabled", type: "checkbox", checked: rule ? rule.enabled : true });
  condition.value = rule?.condition ?? "above";
  kind.value = rule?.kind ?? "air";
  district.value = rule?.district ?? "";
  severity.value = rule?.severity ?? "warning";
  const unitLabel = h("span", { class: "muted" });

  function sync() {
    const offline = condition.value === "offline";
    replace(metric, Object.keys(session.contract[kind.value] || {}).map((m) =>
      h("option", { value: m }, t(`metric.${m}`))));
    metric.value = rule?.metric ?? metric.options[0]?.value;
    for (const control of [metric, threshold]) control.closest("label")?.toggleAttribute("hidden", offline);
    kind.closest("label")?.toggleAttribute("hidden", offline && !editing);
    replace(unitLabel, unit(unitOf(metric.value)));
  }
  const save = h("button", { type: "submit", class: "primary" }, t(editing ? "rule.save" : "rule.create"));
  const cancel = h("button", { type: "button" }, t("rule.cancel"));
  const form = h("form", { class: "rule-form", dataset: { rule: rule?.rule_id ?? "new" } },
    field(t("rule.name"), name), field(t("rule.condition"), condition), field(t("rule.kind"), kind),
    field(t("rule.metric"), metric), h("label", {}, t("rule.threshold"), threshold, unitLabel),
    field(t("rule.window_min"), minutes), field(t("rule.district"), district),
    field(t("rule.device"), device), field(t("rule.severity"), severity),
    h("label", { class: "check" }, enabled, t("rule.enabled")), h("div", { class: "form-actions" }, save, cancel));
  condition.addEventListener("change", sync);
  kind.addEventListener("change", sync);
  metric.addEventListener("change", () => replace(unitLabel, unit(unitOf(metric.value))));
  cancel.addEventListener("click", () => onDone(null));
  sync();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const windowS = Number(minutes.value) * 60;
    const offline = condition.value === "offline";
    let body = { name: name.value.trim(), window_s: windowS, severity: severity.value,
      enabled: enabled.checked };
    if (!offline) body.threshold = Number(threshold.value);
    if (!editing) {
      body = { ...body, condition: condition.value, district: district.value || null,
        device_id: device.value.trim() || null, kind: offline ? null : kind.value,
        metric: offline ? null : metric.value };
      if (offline) delete body.threshold;
    }
    save.disabled = true;
    try {
      const saved = editing ? await api.patch(`/alert-rules/${rule.rule_id}`, body)
        : await api.post("/alert-rules", body);
      notify(t(editing ? "rule.saved" : "rule.created"), { kind: "info" });
      onDone(saved);
    } catch (err) {
      refused(t(editing ? "rule.save" : "rule.create"), err);
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

export function render(root) {
  const rows = h("tbody");
  const formBox = h("div", { class: "rule-editor" });
  const add = h("button", { type: "button", class: "primary", hidden: !can("admin") }, t("rule.new"));
  replace(root, h("h2", {}, t("nav.rules")),
    h("section", { class: "panel" }, add, formBox,
      h("table", { class: "grid", id: "rules" },
        h("thead", {}, h("tr", {}, ["name", "watches", "scope", "severity", "enabled", "actions"].map((c) =>
          h("th", { scope: "col" }, t(`rule.col.${c}`))))), rows)));

  function edit(rule) {
    replace(formBox, ruleForm(rule, (saved) => { replace(formBox); if (saved) draw(); }));
    formBox.querySelector("input")?.focus();
  }
  add.addEventListener("click", () => edit(null));

  async function remove(rule) {
    if (!window.confirm(t("rule.delete_confirm", { name: rule.name }))) return;
    try {
      await api.delete(`/alert-rules/${rule.rule_id}`);
      notify(t("rule.deleted"), { kind: "info" });
      draw();
    } catch (err) {
      refused(t("rule.delete"), err);
    }
  }
  async function toggle(rule) {
    try {
      await api.patch(`/alert-rules/${rule.rule_id}`, { enabled: !rule.enabled });
      draw();
    } catch (err) {
      refused(t(rule.enabled ? "rule.disable" : "rule.enable"), err);
    }
  }

  function row(rule) {
    const buttons = can("admin") ? [
      h("button", { type: "button", dataset: { action: "edit" }, onclick: () => edit(rule) }, t("rule.edit")),
      h("button", { type: "button", dataset: { action: "toggle" }, onclick: () => toggle(rule) },
        t(rule.enabled ? "rule.disable" : "rule.enable")),
      h("button", { type: "button", class: "danger", dataset: { action: "delete" }, onclick: () => remove(rule) },
        t("rule.delete"))] : [];
    return h("tr", { dataset: { rule: rule.rule_id }, class: rule.enabled ? "" : "muted" },
      h("td", {}, raw(rule.name)), h("td", {}, describe(rule)), h("td", {}, scopeText(rule)),
      h("td", { class: `sev-${rule.severity}` }, t(`severity.${rule.severity}`)),
      h("td", {}, t(rule.enabled ? "common.yes" : "common.no")),
      h("td", { class: "row-actions" }, buttons));
  }

  async function draw() {
    try {
      await loadRules();
    } catch (err) {
      refused(t("rule.load"), err);
      return;
    }
    replace(rows, [...rules.values()].map(row));
  }
  draw();
  return { destroy() {} };
}
